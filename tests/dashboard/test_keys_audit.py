"""API keys (create shows the plaintext once, revoke) and the team's audit log (events,
filters, metadata, paging with "Load more")."""

from __future__ import annotations

from playwright.async_api import Page, expect

from .conftest import Account, Platform, SignIn


async def _capsules_with(platform: Platform, key: str) -> int:
    resp = await platform.api.get("/v1/capsules", headers={"X-API-Key": key})
    return resp.status_code


async def _owner(platform: Platform) -> Account:
    await platform.signup("Platform Admin")  # the first account; the owner is an ordinary user
    return await platform.signup("Olivia Owner")


def _events(page: Page, action: str | None = None):
    if action is None:
        return page.locator("tr[data-action]")
    return page.locator(f'tr[data-action="{action}"]')


async def test_create_key_shows_it_once_and_revoke(platform: Platform, signed_in: SignIn) -> None:
    owner = await _owner(platform)
    page = await signed_in(owner)
    await page.goto(platform.url + "/dashboard/keys")
    await expect(page.get_by_text("No API keys yet.")).to_be_visible()

    await page.get_by_label("Key name").fill("CI pipeline")
    await page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="API key created")
    await expect(dialog).to_contain_text("you will not see it again")
    field = dialog.get_by_label("API key")
    await expect(field).not_to_have_value("")
    key = await field.input_value()
    await expect(dialog.get_by_role("button", name="Copy api key")).to_be_visible()
    # The key works against the API.
    assert await _capsules_with(platform, key) == 200

    await dialog.get_by_role("button", name="I have copied it").click()
    await expect(dialog).to_be_hidden()
    listed = (await platform.api.get("/v1/api-keys", headers=owner.headers)).json()
    assert [k["name"] for k in listed] == ["CI pipeline"] and listed[0]["key"] is None
    row = page.get_by_role("row").filter(has_text="CI pipeline")
    await expect(row).to_contain_text(listed[0]["key_prefix"])
    await expect(row).to_contain_text("Never")
    assert key.startswith(listed[0]["key_prefix"])
    # Shown once: neither on the page now nor after a reload.
    assert key not in await page.content()
    await page.reload()
    await expect(row).to_be_visible()
    assert key not in await page.content()

    # Revoke, after confirming: the key stops working.
    await row.get_by_role("button", name="Revoke CI pipeline").click()
    confirm = page.get_by_role("dialog", name="Revoke API key")
    await expect(confirm).to_contain_text("CI pipeline")
    await confirm.get_by_role("button", name="Revoke key").click()
    await expect(row).to_have_count(0)
    await expect(page.get_by_text("No API keys yet.")).to_be_visible()
    assert await _capsules_with(platform, key) == 401


async def test_audit_log_shows_events_and_filters(platform: Platform, signed_in: SignIn) -> None:
    owner = await _owner(platform)
    page = await signed_in(owner)
    # Create and revoke a key through the page, rename the team through the API.
    await page.goto(platform.url + "/dashboard/keys")
    await page.get_by_label("Key name").fill("Deploy bot")
    await page.get_by_role("button", name="Create key").click()
    await page.get_by_role("button", name="I have copied it").click()
    await page.get_by_role("button", name="Revoke Deploy bot").click()
    await (
        page.get_by_role("dialog", name="Revoke API key")
        .get_by_role("button", name="Revoke key")
        .click()
    )
    await expect(page.get_by_text("No API keys yet.")).to_be_visible()
    resp = await platform.api.patch(
        f"/v1/teams/{owner.team_id}", json={"name": "Audited Crew"}, headers=owner.headers
    )
    assert resp.status_code == 204, resp.text

    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    await expect(page).to_have_url(platform.url + "/dashboard/audit")
    await expect(_events(page, "create")).to_have_count(1)
    await expect(_events(page, "revoke")).to_have_count(1)
    await expect(_events(page, "rename")).to_have_count(1)
    revoke = _events(page, "revoke")
    await expect(revoke).to_contain_text("api_key")
    await expect(revoke).to_contain_text("Olivia Owner")
    await expect(revoke).to_contain_text("success")
    # Metadata expands under its row.
    await revoke.get_by_role("button", name="Show metadata").click()
    await expect(page.locator("tr.meta")).to_contain_text('"name": "Deploy bot"')
    await revoke.get_by_role("button", name="Hide metadata").click()
    await expect(page.locator("tr.meta")).to_have_count(0)

    # Filter by action, with several values.
    await page.get_by_role("button", name="Action").click()
    await page.get_by_role("checkbox", name="revoke", exact=True).check()
    await expect(_events(page)).to_have_count(1)
    await expect(_events(page, "revoke")).to_have_count(1)
    await page.get_by_role("checkbox", name="rename", exact=True).check()
    await expect(_events(page)).to_have_count(2)
    await expect(_events(page, "create")).to_have_count(0)
    # And by resource type, together with the action filter.
    await page.get_by_role("button", name="Resource type").click()
    await page.get_by_role("checkbox", name="api_key", exact=True).check()
    await expect(_events(page)).to_have_count(1)
    await expect(_events(page, "revoke")).to_have_count(1)
    await page.get_by_role("button", name="Clear filters").click()
    await expect(_events(page)).to_have_count(3)


async def test_audit_log_loads_more(platform: Platform, signed_in: SignIn) -> None:
    owner = await _owner(platform)
    for i in range(55):
        resp = await platform.api.post(
            "/v1/api-keys", json={"name": f"key {i}"}, headers=owner.headers
        )
        assert resp.status_code == 201, resp.text
    everything = await platform.api.get(
        "/v1/audit-logs", params={"limit": 200}, headers=owner.headers
    )
    total = len(everything.json()["items"])
    assert total >= 55

    page = await signed_in(owner)
    await page.goto(platform.url + "/dashboard/audit")
    await expect(_events(page)).to_have_count(50)
    await expect(page.get_by_text("End of the log")).to_have_count(0)
    # Newest first: the last key created is on top.
    await expect(_events(page).first).to_contain_text("api_key")
    await page.get_by_role("button", name="Load more").click()
    await expect(_events(page)).to_have_count(total)
    await expect(page.get_by_role("button", name="Load more")).to_have_count(0)
    await expect(page.get_by_text(f"End of the log · {total} events")).to_be_visible()
