"""Quotas in the dashboard: a platform admin sets a team's limits on the admin teams page; the
team's members see limits and usage on their team page, and a create over a limit is refused
with the reason in the dialog."""

from __future__ import annotations

from playwright.async_api import expect

from .conftest import Platform, SignIn


async def test_an_admin_sets_a_teams_quotas_and_its_members_see_them(
    platform: Platform, signed_in: SignIn
) -> None:
    admin = await platform.signup("Walter Skinner")
    user = await platform.signup("Monica Reyes")
    page = await signed_in(admin)
    await page.goto(platform.url + "/admin/teams")
    row = page.get_by_role("row").filter(has_text=user.team_id)
    quotas = row.get_by_test_id("quotas")
    await expect(quotas).to_contain_text("0/20 capsules")  # the platform default
    await expect(quotas).not_to_contain_text("custom")

    await row.get_by_role("button", name="Edit quotas of Monica Reyes's Team").click()
    dialog = page.get_by_role("dialog", name="Quotas of Monica Reyes's Team")
    capsules = dialog.get_by_label("Capsules (not stopped)")
    await expect(capsules).to_have_value("")
    await expect(capsules).to_have_attribute("placeholder", "default 20")
    await capsules.fill("1")
    await dialog.get_by_label("Memory, MB (running capsules)").fill("2048")
    await dialog.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status").filter(has_text="Quotas of")).to_be_visible()
    await expect(dialog).to_be_hidden()
    await expect(quotas).to_contain_text("0/1 capsules")
    await expect(quotas).to_contain_text("custom")
    saved = await platform.api.get(f"/v1/admin/teams/{user.team_id}/quotas", headers=admin.headers)
    assert saved.json()["overrides"] == {
        "max_capsules": 1,
        "max_vcpus": None,
        "max_memory_mb": 2048,
        "max_disk_mb": None,
    }

    # The team's member sees the limits; a second capsule is refused with the reason.
    made = await platform.api.post(
        "/v1/capsules", json={"template": "minimal", "memory_mb": 256}, headers=user.headers
    )
    assert made.status_code == 201, made.text
    page = await signed_in(user)
    await page.goto(platform.url + "/dashboard/team")
    table = page.get_by_role("table", name="Team quotas")
    capsule_row = table.locator('tr[data-quota="Capsules"]')
    await expect(capsule_row.get_by_test_id("used")).to_have_text("1")
    await expect(capsule_row.get_by_test_id("limit")).to_have_text("1")
    memory_row = table.locator('tr[data-quota="Memory"]')
    await expect(memory_row.get_by_test_id("used")).to_have_text("256 MB")
    await expect(memory_row.get_by_test_id("limit")).to_have_text("2.0 GB")

    await page.goto(platform.url + "/dashboard/capsules")
    await page.get_by_role("button", name="New capsule").click()
    create = page.get_by_role("dialog", name="New capsule")
    await expect(create.get_by_label("Template")).to_have_value("minimal")
    await create.get_by_role("button", name="Create").click()
    await expect(create.get_by_role("alert")).to_contain_text("at most 1 capsules")
    listed = await platform.api.get("/v1/capsules", headers=user.headers)
    assert [c["id"] for c in listed.json()] == [made.json()["id"]]
