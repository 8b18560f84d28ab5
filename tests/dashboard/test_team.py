"""The team page: inline rename, members (typeahead add, role change, remove) and the danger
zone (leave or delete, then on to the next team; impossible with a single team)."""

from __future__ import annotations

from playwright.async_api import Page, expect

from ..controlplane.helpers import PASSWORD
from .conftest import Account, Platform, SignIn


async def _team(platform: Platform, account: Account) -> dict:
    resp = await platform.api.get(f"/v1/teams/{account.team_id}", headers=account.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _switched(platform: Platform, account: Account, team_id: str) -> Account:
    resp = await platform.api.post(
        "/v1/auth/switch-team", json={"team_id": team_id}, headers=account.headers
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return Account(account.email, account.name, body["token"], account.user_id, body["team_id"])


def _row(page: Page, email: str):
    return page.get_by_role("row").filter(has_text=email)


def _role(page: Page, email: str, role: str):
    return _row(page, email).get_by_role("cell", name=role, exact=True)


async def test_rename_add_change_role_and_remove(platform: Platform, signed_in: SignIn) -> None:
    await platform.signup("Platform Admin")  # the first account; the rest are ordinary users
    owner = await platform.signup("Olivia Owner")
    bob = await platform.signup("Bob Builder")
    carol = await platform.signup("Carol Coder")
    name = (await _team(platform, owner))["team"]["name"]

    page = await signed_in(owner)
    await page.goto(platform.url + "/dashboard/team")
    await expect(page.get_by_role("heading", name=name)).to_be_visible()
    detail = await _team(platform, owner)
    await expect(page.get_by_test_id("team-slug")).to_have_text(detail["team"]["slug"])
    await expect(page.get_by_test_id("team-id")).to_have_text(owner.team_id)
    await expect(_role(page, owner.email, "owner")).to_be_visible()

    # Inline rename.
    await page.get_by_role("button", name="Rename team").click()
    await page.get_by_label("Team name").fill("Renamed Crew")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("heading", name="Renamed Crew")).to_be_visible()
    assert (await _team(platform, owner))["team"]["name"] == "Renamed Crew"
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("combobox", name="Team")).to_contain_text("Renamed Crew")

    # Add Bob through the typeahead: the search offers only people who already share a team
    # with the caller (it must not tell strangers which emails have accounts), so Bob first
    # joins another team of Olivia's; Carol shares none and is not offered.
    side = await platform.api.post("/v1/teams", json={"name": "Side"}, headers=owner.headers)
    assert side.status_code == 201, side.text
    in_side = await _switched(platform, owner, side.json()["id"])
    added = await platform.api.post(
        f"/v1/teams/{in_side.team_id}/members", json={"email": bob.email}, headers=in_side.headers
    )
    assert added.status_code == 201, added.text
    field = page.get_by_label("Add member by email")
    async with page.expect_response(lambda r: "/v1/users/search" in r.url) as searched:
        await field.press_sequentially(carol.email.split("@")[0] + "@")
    assert (await searched.value).ok
    await expect(page.get_by_role("listbox")).to_contain_text("No matching accounts")
    await expect(page.get_by_role("option", name=carol.email)).to_have_count(0)
    await field.fill("")
    await field.press_sequentially(bob.email.split("@")[0] + "@")
    option = page.get_by_role("option", name=bob.email)
    await expect(option).to_be_visible()
    await option.click()
    await expect(field).to_have_value(bob.email)
    await page.get_by_role("button", name="Add member", exact=True).click()
    await expect(_row(page, bob.email)).to_contain_text("Bob Builder")
    await expect(_role(page, bob.email, "member")).to_be_visible()
    # Carol by her full address, typed.
    await field.fill(carol.email)
    await page.get_by_role("button", name="Add member", exact=True).click()
    await expect(_row(page, carol.email)).to_be_visible()

    # Make Bob an admin, then a member again.
    await page.get_by_role("button", name=f"Make {bob.email} an admin").click()
    await expect(_role(page, bob.email, "admin")).to_be_visible()
    roles = {m["email"]: m["role"] for m in (await _team(platform, owner))["members"]}
    assert roles[bob.email] == "admin"
    await page.get_by_role("button", name=f"Make {bob.email} a member").click()
    await expect(page.get_by_role("button", name=f"Make {bob.email} an admin")).to_be_visible()
    await expect(_role(page, bob.email, "member")).to_be_visible()
    # The owner's own row offers nothing.
    await expect(_row(page, owner.email).get_by_role("button")).to_have_count(0)

    # Remove Carol, after confirming.
    await page.get_by_role("button", name=f"Remove {carol.email}").click()
    dialog = page.get_by_role("dialog", name="Remove member")
    await expect(dialog).to_contain_text(carol.email)
    await dialog.get_by_role("button", name="Remove member").click()
    await expect(_row(page, carol.email)).to_have_count(0)
    emails = {m["email"] for m in (await _team(platform, owner))["members"]}
    assert emails == {owner.email, bob.email}


async def test_member_sees_no_management(platform: Platform, signed_in: SignIn) -> None:
    await platform.signup("Platform Admin")
    owner = await platform.signup("Olivia Owner")
    bob = await platform.signup("Bob Builder")
    resp = await platform.api.post(
        f"/v1/teams/{owner.team_id}/members", json={"email": bob.email}, headers=owner.headers
    )
    assert resp.status_code == 201, resp.text
    bob_there = await _switched(platform, bob, owner.team_id)

    page = await signed_in(bob_there)
    await page.goto(platform.url + "/dashboard/team")
    await expect(_row(page, owner.email)).to_be_visible()
    await expect(page.get_by_role("button", name="Rename team")).to_have_count(0)
    await expect(page.get_by_label("Add member by email")).to_have_count(0)
    await expect(page.get_by_role("button", name="Remove", exact=False)).to_have_count(0)
    await expect(page.get_by_role("button", name="Leave team")).to_be_enabled()


async def test_leave_switches_to_the_next_team(platform: Platform, signed_in: SignIn) -> None:
    await platform.signup("Platform Admin")
    owner = await platform.signup("Olivia Owner")
    bob = await platform.signup("Bob Builder")
    resp = await platform.api.post(
        f"/v1/teams/{owner.team_id}/members", json={"email": bob.email}, headers=owner.headers
    )
    assert resp.status_code == 201, resp.text
    shared = (await _team(platform, owner))["team"]["name"]
    own = (await _team(platform, bob))["team"]["name"]
    bob_there = await _switched(platform, bob, owner.team_id)

    page = await signed_in(bob_there)
    await page.goto(platform.url + "/dashboard/team")
    await expect(page.get_by_role("heading", name=shared)).to_be_visible()
    await page.get_by_role("button", name="Leave team").click()
    dialog = page.get_by_role("dialog", name="Leave team")
    await dialog.get_by_role("button", name=f"Leave {shared}").click()
    # On to Bob's own team.
    await expect(page.get_by_role("heading", name=own)).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("combobox", name="Team")).to_have_value(bob.team_id)
    emails = {m["email"] for m in (await _team(platform, owner))["members"]}
    assert bob.email not in emails
    # Now his only team: leaving or deleting it is not offered.
    await expect(page.get_by_role("button", name="Delete team")).to_be_disabled()


async def test_delete_needs_another_team(platform: Platform, signed_in: SignIn) -> None:
    await platform.signup("Platform Admin")
    owner = await platform.signup("Olivia Owner")
    first = (await _team(platform, owner))["team"]["name"]

    page = await signed_in(owner)
    await page.goto(platform.url + "/dashboard/team")
    await expect(page.get_by_role("heading", name=first)).to_be_visible()
    delete = page.get_by_role("button", name="Delete team")
    await expect(delete).to_be_disabled()
    await expect(page.get_by_text("This is your only team")).to_be_visible()

    resp = await platform.api.post("/v1/teams", json={"name": "Second Crew"}, headers=owner.headers)
    assert resp.status_code == 201, resp.text
    second = resp.json()["id"]
    await page.reload()
    await expect(delete).to_be_enabled()
    await expect(page.get_by_text("This is your only team")).to_have_count(0)
    await delete.click()
    dialog = page.get_by_role("dialog", name="Delete team")
    await dialog.get_by_role("button", name=f"Delete {first}").click()
    await expect(page.get_by_role("heading", name="Second Crew")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("combobox", name="Team")).to_have_value(second)
    # The old token died with its team; a fresh login sees only the second one.
    login = await platform.api.post(
        "/v1/auth/login", json={"email": owner.email, "password": PASSWORD}
    )
    token = login.json()["token"]
    teams = await platform.api.get("/v1/teams", headers={"Authorization": f"Bearer {token}"})
    assert [t["id"] for t in teams.json()] == [second]
