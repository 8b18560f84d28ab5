"""The platform admin area: access, teams (BYOC), users, hosts and templates."""

from __future__ import annotations

import re

from playwright.async_api import expect

from .conftest import Platform, SignIn


async def test_non_admins_are_sent_away(platform: Platform, signed_in: SignIn) -> None:
    await platform.signup("Walter Skinner")  # the platform's admin
    member = await platform.signup("Alex Krycek")
    page = await signed_in(member)
    await page.goto(platform.url + "/admin/hosts")
    await expect(page).to_have_url(platform.url + "/dashboard/capsules")
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link", name="Admin area")).to_have_count(0)
    resp = await platform.api.get("/v1/admin/teams", headers=member.headers)
    assert resp.status_code == 403


async def test_teams_byoc_toggle_and_users(platform: Platform, signed_in: SignIn) -> None:
    admin = await platform.signup("Walter Skinner")
    other = await platform.signup("Monica Reyes")
    page = await signed_in(admin)
    await page.goto(platform.url + "/admin")
    await expect(page).to_have_url(platform.url + "/admin/templates")
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Teams").click()
    await expect(page).to_have_url(platform.url + "/admin/teams")

    row = page.get_by_role("row").filter(has_text=other.team_id)
    await expect(row).to_have_count(1)
    await expect(row.get_by_role("cell").nth(2)).to_have_text("1")  # members
    switch = row.get_by_role("switch")
    await expect(switch).not_to_be_checked()
    await switch.click()
    await expect(page.get_by_role("status").filter(has_text="BYOC enabled")).to_be_visible()
    await expect(switch).to_be_checked()
    teams = (await platform.api.get("/v1/admin/teams", headers=admin.headers)).json()["teams"]
    assert next(t for t in teams if t["id"] == other.team_id)["is_byoc"] is True
    assert next(t for t in teams if t["id"] == admin.team_id)["is_byoc"] is False

    await switch.click()
    await expect(switch).not_to_be_checked()
    await expect(page.get_by_role("status").filter(has_text="BYOC disabled")).to_be_visible()
    teams = (await platform.api.get("/v1/admin/teams", headers=admin.headers)).json()["teams"]
    assert next(t for t in teams if t["id"] == other.team_id)["is_byoc"] is False

    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    users = page.get_by_role("table", name="Users")
    admin_row = users.get_by_role("row").filter(has_text=admin.email)
    other_row = users.get_by_role("row").filter(has_text=other.email)
    await expect(admin_row).to_contain_text("Walter Skinner")
    await expect(admin_row).to_contain_text("admin")
    await expect(other_row).to_contain_text("Monica Reyes")
    await expect(other_row).to_contain_text("active")
    await expect(other_row.get_by_role("cell").nth(2)).to_have_text("no")
    await page.get_by_label("Filter users").fill("reyes")
    await expect(admin_row).to_have_count(0)
    await expect(other_row).to_have_count(1)


async def test_hosts_add_tag_and_delete(platform: Platform, signed_in: SignIn) -> None:
    admin = await platform.signup("Walter Skinner")
    page = await signed_in(admin)
    await page.goto(platform.url + "/admin/hosts")
    await expect(page.get_by_role("tab", name=re.compile("^Platform"))).to_have_attribute(
        "aria-selected", "true"
    )

    await page.get_by_role("button", name="Add host").click()
    add = page.get_by_role("dialog", name="Add host")
    await add.get_by_label("Provider").fill("hetzner")
    await add.get_by_role("button", name="Create host").click()
    reveal = page.get_by_role("dialog", name="Registration token")
    await expect(reveal).to_be_visible()
    token = (await reveal.get_by_test_id("registration-token").inner_text()).strip()
    assert len(token) > 16
    command = await reveal.get_by_test_id("agent-command").inner_text()
    assert command.strip() == (
        f"WRENN_AGENT_CONTROL_PLANE_URL={platform.url} "
        f"WRENN_AGENT_REGISTRATION_TOKEN={token} wrenn agent --listen <ip:port>"
    )
    await expect(reveal.get_by_role("button", name="Copy token")).to_be_visible()
    await reveal.get_by_role("button", name="Done").click()
    await expect(reveal).to_be_hidden()

    hosts = (await platform.api.get("/v1/hosts", headers=admin.headers)).json()
    pending = [h for h in hosts if h["status"] == "pending"]
    assert len(pending) == 1 and pending[0]["provider"] == "hetzner"
    host_id = pending[0]["id"]
    row = page.locator(f"tr[data-host='{host_id}']")
    await expect(row.get_by_text("pending", exact=True)).to_be_visible()
    pills = page.get_by_role("list", name="Host status counts")
    await expect(pills.get_by_role("listitem").filter(has_text="pending")).to_contain_text("1")

    # A new token for a host that has not registered yet.
    await row.get_by_role("button", name=f"Regenerate token for {host_id}").click()
    await expect(reveal).to_be_visible()
    new_token = (await reveal.get_by_test_id("registration-token").inner_text()).strip()
    assert new_token and new_token != token
    await reveal.get_by_role("button", name="Done").click()

    await row.get_by_label(f"New tag for {host_id}").fill("gpu")
    await row.get_by_role("button", name=f"Add tag to {host_id}").click()
    tags = row.get_by_role("list", name=f"Tags of {host_id}")
    await expect(tags.get_by_role("listitem")).to_have_count(1)
    await expect(tags.get_by_role("listitem")).to_contain_text("gpu")
    listed = (await platform.api.get(f"/v1/hosts/{host_id}/tags", headers=admin.headers)).json()
    assert listed == ["gpu"]
    await row.get_by_role("button", name=f"Remove tag gpu from {host_id}").click()
    await expect(tags.get_by_role("listitem")).to_have_count(0)
    listed = (await platform.api.get(f"/v1/hosts/{host_id}/tags", headers=admin.headers)).json()
    assert listed == []

    await row.get_by_role("button", name=f"Delete {host_id}").click()
    confirm = page.get_by_role("dialog", name="Delete host")
    await expect(confirm).to_contain_text("No capsules run on it.")
    await confirm.get_by_role("button", name="Delete", exact=True).click()
    await expect(confirm).to_be_hidden()
    await expect(row).to_have_count(0)
    resp = await platform.api.get(f"/v1/hosts/{host_id}", headers=admin.headers)
    assert resp.status_code == 404

    # BYOC hosts are on their own tab, with their team's name.
    other = await platform.signup("Monica Reyes")
    resp = await platform.api.put(
        f"/v1/admin/teams/{other.team_id}/byoc", json={"enabled": True}, headers=admin.headers
    )
    assert resp.status_code == 204
    resp = await platform.api.post(
        "/v1/hosts", json={"type": "byoc", "team_id": other.team_id}, headers=other.headers
    )
    assert resp.status_code == 201, resp.text
    byoc_id = resp.json()["host"]["id"]
    team_name = resp.json()["host"]["team_name"]
    await page.get_by_role("tab", name=re.compile("^BYOC")).click()
    byoc_row = page.locator(f"tr[data-host='{byoc_id}']")
    await expect(byoc_row).to_be_visible()
    if team_name:
        await expect(byoc_row).to_contain_text(team_name)


async def test_templates_tab_lists_minimal_which_cannot_be_deleted(
    platform: Platform, signed_in: SignIn
) -> None:
    admin = await platform.signup("Walter Skinner")
    page = await signed_in(admin)
    await page.goto(platform.url + "/admin/templates")
    await expect(page.get_by_role("tab", name=re.compile("^Templates"))).to_have_attribute(
        "aria-selected", "true"
    )
    row = page.get_by_role("table", name="Templates").get_by_role("row").filter(has_text="minimal")
    await expect(row).to_contain_text("platform")
    await expect(row).to_contain_text("base")
    await row.get_by_role("button", name="Delete minimal").click()
    confirm = page.get_by_role("dialog", name="Delete template")
    await confirm.get_by_role("button", name="Delete", exact=True).click()
    await expect(confirm.get_by_role("alert")).to_contain_text("base template")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_be_hidden()
    await expect(row).to_be_visible()
    names = [
        t["name"]
        for t in (await platform.api.get("/v1/admin/templates", headers=admin.headers)).json()
    ]
    assert "minimal" in names


async def test_platform_audit_log_loads_more(platform: Platform, signed_in: SignIn) -> None:
    admin = await platform.signup("Walter Skinner")
    for _ in range(52):
        resp = await platform.api.post("/v1/hosts", json={"type": "regular"}, headers=admin.headers)
        assert resp.status_code == 201
    page = await signed_in(admin)
    await page.goto(platform.url + "/admin/audit")
    table = page.get_by_role("table", name="Platform audit events")
    events = table.locator("tbody tr")
    await expect(events).to_have_count(50)
    await expect(events.first).to_contain_text("host.add")
    await expect(events.first).to_contain_text("Walter Skinner")
    await page.get_by_role("button", name="Load more").click()
    await expect(events).to_have_count(52)
    await expect(page.get_by_role("button", name="Load more")).to_have_count(0)


async def test_deleting_a_host_with_capsules_needs_force(
    platform: Platform, signed_in: SignIn
) -> None:
    admin = await platform.signup("Walter Skinner")
    resp = await platform.api.post(
        "/v1/capsules", json={"template": "minimal", "memory_mb": 256}, headers=admin.headers
    )
    assert resp.status_code == 201, resp.text
    capsule_id = resp.json()["id"]
    hosts = (await platform.api.get("/v1/hosts", headers=admin.headers)).json()
    local = next(h for h in hosts if h["status"] == "online")

    page = await signed_in(admin)
    await page.goto(platform.url + "/admin/hosts")
    pills = page.get_by_role("list", name="Host status counts")
    await expect(pills.get_by_role("listitem").filter(has_text="online")).to_contain_text("1")
    row = page.locator(f"tr[data-host='{local['id']}']")
    await expect(row.get_by_text("online", exact=True)).to_be_visible()
    await row.get_by_role("button", name=f"Delete {local['id']}").click()
    confirm = page.get_by_role("dialog", name="Delete host")
    doomed = confirm.get_by_role("list", name="Capsules that will be destroyed")
    await expect(doomed.get_by_role("listitem")).to_have_text([capsule_id])
    force = confirm.get_by_role("button", name="Force delete")
    await expect(force).to_be_disabled()
    await confirm.get_by_label("Destroy these capsules and delete the host").check()
    await force.click()
    await expect(confirm).to_be_hidden(timeout=30_000)
    await expect(row).to_have_count(0)
    capsule = await platform.api.get(f"/v1/capsules/{capsule_id}", headers=admin.headers)
    assert capsule.status_code == 404 or capsule.json()["status"] == "stopped"
