"""The BYOC hosts page: only for teams with BYOC on; registering a host (one-time token and the
agent command), its pending then registered state, deleting it; members only look."""

from __future__ import annotations

from playwright.async_api import Page, expect

from wrenn_server.agentproto.tls import fingerprint
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models.capsules import Sandbox
from wrenn_server.hostagent import tls

from .conftest import Account, Platform, SignIn


async def _byoc_team(platform: Platform) -> tuple[Account, Account]:
    """(platform admin, owner of a team with BYOC on)."""
    admin = await platform.signup("Platform Admin")
    owner = await platform.signup("Olivia Owner")
    resp = await platform.api.put(
        f"/v1/admin/teams/{owner.team_id}/byoc", json={"enabled": True}, headers=admin.headers
    )
    assert resp.status_code in (200, 204), resp.text
    return admin, owner


async def _hosts(platform: Platform, account: Account) -> list[dict]:
    resp = await platform.api.get("/v1/hosts", headers=account.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _row(page: Page, host_id: str):
    return page.locator(f'tr[data-host="{host_id}"]')


async def test_hidden_when_byoc_is_off(platform: Platform, signed_in: SignIn) -> None:
    await platform.signup("Platform Admin")
    owner = await platform.signup("Olivia Owner")
    page = await signed_in(owner)
    await page.goto(platform.url + "/dashboard/team")
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link", name="Audit log")).to_be_visible()
    await expect(nav.get_by_role("link", name="BYOC hosts")).to_have_count(0)
    await page.goto(platform.url + "/dashboard/byoc")
    await expect(page.get_by_text("Bring your own compute is not enabled")).to_be_visible()
    await expect(page.get_by_role("button", name="Register a host")).to_have_count(0)


async def test_register_and_delete_a_host(platform: Platform, signed_in: SignIn) -> None:
    _admin, owner = await _byoc_team(platform)
    page = await signed_in(owner)
    await page.goto(platform.url + "/dashboard/team")
    nav = page.get_by_role("navigation", name="Main")
    await nav.get_by_role("link", name="BYOC hosts").click()
    await expect(page).to_have_url(platform.url + "/dashboard/byoc")
    await expect(page.get_by_text("No hosts yet.")).to_be_visible()

    await page.get_by_role("button", name="Register a host").click()
    dialog = page.get_by_role("dialog", name="Register a host")
    await expect(dialog).to_contain_text("you will not see it again")
    token_field = dialog.get_by_label("Registration token")
    await expect(token_field).not_to_have_value("")
    token = await token_field.input_value()
    await expect(dialog.get_by_test_id("register-command")).to_have_text(
        f"WRENN_AGENT_CONTROL_PLANE_URL={platform.url} "
        f"WRENN_AGENT_REGISTRATION_TOKEN={token} wrenn agent --listen <ip:port>"
    )
    await expect(dialog.get_by_role("button", name="Copy command")).to_be_visible()
    await dialog.get_by_role("button", name="Done").click()
    await expect(dialog).to_be_hidden()
    assert token not in await page.content()

    (host,) = await _hosts(platform, owner)
    assert host["status"] == "pending" and host["team_id"] == owner.team_id
    row = _row(page, host["id"])
    await expect(row.locator("[data-status]")).to_have_text("pending")
    await expect(row).to_contain_text("Never")

    # The agent registers with the token: the row shows its address, specs and the start of the
    # pinned certificate's fingerprint (the whole one in its title).
    certificate = tls.generate().cert_pem.decode()
    resp = await platform.api.post(
        "/v1/hosts/register",
        json={
            "token": token,
            "address": "192.0.2.10:7000",
            "arch": "x86_64",
            "cpu_cores": 4,
            "memory_mb": 8192,
            "disk_gb": 100,
            "tls_certificate": certificate,
        },
    )
    assert resp.status_code == 201, resp.text
    await expect(row).to_contain_text("192.0.2.10:7000", timeout=15_000)
    sha256 = fingerprint(certificate)
    await expect(row.get_by_title(f"TLS certificate SHA-256 {sha256}")).to_have_text(
        f"TLS {sha256[:23]}…"
    )
    await expect(row).to_contain_text("4 vCPU")
    await expect(row).to_contain_text("8.0 GB")
    await expect(row).to_contain_text("100 GB disk")

    # Delete, after a preview that shows it runs no capsules.
    await row.get_by_role("button", name=f"Delete host {host['id']}").click()
    confirm = page.get_by_role("dialog", name="Delete host")
    await expect(confirm).to_contain_text("It runs no capsules.")
    await confirm.get_by_role("button", name="Delete host").click()
    await expect(row).to_have_count(0)
    await expect(page.get_by_text("No hosts yet.")).to_be_visible()
    assert await _hosts(platform, owner) == []


async def test_a_member_sees_hosts_but_cannot_manage(platform: Platform, signed_in: SignIn) -> None:
    _admin, owner = await _byoc_team(platform)
    bob = await platform.signup("Bob Builder")
    resp = await platform.api.post(
        f"/v1/teams/{owner.team_id}/members", json={"email": bob.email}, headers=owner.headers
    )
    assert resp.status_code == 201, resp.text
    resp = await platform.api.post(
        "/v1/hosts", json={"type": "byoc", "team_id": owner.team_id}, headers=owner.headers
    )
    assert resp.status_code == 201, resp.text
    host_id = resp.json()["host"]["id"]
    switched = await platform.api.post(
        "/v1/auth/switch-team", json={"team_id": owner.team_id}, headers=bob.headers
    )
    assert switched.status_code == 200, switched.text
    bob_there = Account(bob.email, bob.name, switched.json()["token"], bob.user_id, owner.team_id)

    page = await signed_in(bob_there)
    await page.goto(platform.url + "/dashboard/byoc")
    row = _row(page, host_id)
    await expect(row.locator("[data-status]")).to_have_text("pending")
    await expect(page.get_by_role("button", name="Register a host")).to_be_disabled()
    await expect(row.get_by_role("button", name=f"Delete host {host_id}")).to_be_disabled()
    await expect(page.get_by_role("note")).to_contain_text("Only the team owner or an admin")


async def test_deleting_a_host_with_capsules_needs_force(
    platform: Platform, signed_in: SignIn
) -> None:
    _admin, owner = await _byoc_team(platform)
    resp = await platform.api.post(
        "/v1/hosts", json={"type": "byoc", "team_id": owner.team_id}, headers=owner.headers
    )
    assert resp.status_code == 201, resp.text
    host_id = resp.json()["host"]["id"]
    # A capsule on that host, straight into the database (the host never ran an agent).
    sandbox = Sandbox(
        id=ids.new_id(),
        team_id=ids.TEAM.parse(owner.team_id),
        host_id=ids.HOST.parse(host_id),
        template="minimal",
        status="paused",
        vcpus=1,
        memory_mb=256,
    )
    async with platform.db.sessionmaker() as session, session.begin():
        session.add(sandbox)
    capsule_id = ids.SANDBOX.format(sandbox.id)

    page = await signed_in(owner)
    await page.goto(platform.url + "/dashboard/byoc")
    row = _row(page, host_id)
    await row.get_by_role("button", name=f"Delete host {host_id}").click()
    confirm = page.get_by_role("dialog", name="Delete host")
    await expect(confirm).to_contain_text("It runs 1 capsule, which will be destroyed")
    await expect(confirm).to_contain_text(capsule_id)
    go = confirm.get_by_role("button", name="Destroy capsules and delete")
    await expect(go).to_be_disabled()
    await confirm.get_by_label("Destroy these capsules").check()
    await go.click()
    await expect(row).to_have_count(0)
    assert await _hosts(platform, owner) == []
    async with platform.db.sessionmaker() as session:
        assert (await session.get(Sandbox, sandbox.id)).status == "stopped"
