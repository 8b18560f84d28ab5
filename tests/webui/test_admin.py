"""The admin users and teams pages against a mocked API: both are paged (page controls, the
total); a user is deactivated and reactivated after a confirmation, never yourself, and a refusal
is a toast; a team is deleted once its name is typed, the dialog saying how many capsules go with
it, after which the row shows it deleted; a refusal stays in the dialog; deleted teams are greyed
with their date and no actions."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, Route, expect

from .conftest import TOKEN, USER, MockApi, error_body

ADMIN = {**USER, "is_admin": True}


def _user(n: int, **extra: Any) -> dict[str, Any]:
    uid = f"u-{n}"
    user = {"id": uid, "user_id": uid, "name": f"User {n}", "email": f"user{n}@example.com"}
    user |= {"is_admin": False, "is_active": True, "status": "active", "email_verified": True}
    user |= {"created_at": "2026-01-02T00:00:00Z", "teams_joined": 1, "teams_owned": 1}
    return user | extra


def _team(n: int, **extra: Any) -> dict[str, Any]:
    quotas = {
        "limits": {"max_capsules": 10, "max_vcpus": 8, "max_memory_mb": 8192, "max_disk_mb": 4096},
        "usage": {"capsules": 0, "vcpus": 0, "memory_mb": 0},
        "overrides": {"max_capsules": None, "max_vcpus": None},
    }
    team = {"id": f"t-{n}", "name": f"Team {n}", "slug": f"{n:012x}", "is_byoc": False}
    team |= {"created_at": "2026-01-02T00:00:00Z", "deleted_at": None, "member_count": 2}
    team |= {"owner_name": "Owner", "owner_email": "owner@example.com"}
    team |= {"active_sandbox_count": 0, "channel_count": 0, "quotas": quotas}
    return team | extra


def paged(key: str, pages: list[list[dict[str, Any]]], total: int) -> Any:
    """A paged list's reply: the page its `?page=` asks for."""

    async def handle(route: Route) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        n = int(query.get("page", ["1"])[0])
        body = {key: pages[n - 1], "total": total, "page": n, "per_page": 100}
        body["total_pages"] = len(pages)
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    return handle


@pytest.fixture
async def admin_page(context: BrowserContext, page: Page) -> Page:
    session = json.dumps({"token": TOKEN, "user": ADMIN})
    await context.add_init_script(f"localStorage.setItem('wrenn.session', {json.dumps(session)});")
    return page


def _users_api(api: MockApi, pages: list[list[dict[str, Any]]], total: int) -> None:
    api.on("GET", "/v1/admin/users", paged("users", pages, total))
    api.on("GET", "/v1/admin/invitations", {"json": []})


async def test_users_are_paged(admin_page: Page, api: MockApi) -> None:
    page = admin_page
    _users_api(api, [[_user(n) for n in range(2, 102)], [_user(102)]], 101)
    await page.goto("/admin/users")
    table = page.get_by_role("table", name="Users")
    await expect(table.locator("tbody tr")).to_have_count(100)
    await expect(page.get_by_test_id("total")).to_have_text("101")
    pager = page.get_by_role("navigation", name="Users pages")
    await expect(pager.get_by_test_id("page-of")).to_have_text("Page 1 of 2")
    await expect(pager.get_by_role("button", name="Previous")).to_be_disabled()
    await pager.get_by_role("button", name="Next").click()
    await expect(table.locator("tbody tr")).to_have_count(1)
    await expect(table.locator("tbody tr")).to_contain_text("user102@example.com")
    await expect(pager.get_by_test_id("page-of")).to_have_text("Page 2 of 2")
    await expect(pager.get_by_role("button", name="Next")).to_be_disabled()
    await pager.get_by_role("button", name="Previous").click()
    await expect(table.locator("tbody tr")).to_have_count(100)


async def test_deactivate_and_reactivate_after_confirming(admin_page: Page, api: MockApi) -> None:
    page = admin_page
    state = {"active": True}
    bodies: list[Any] = []

    async def users(route: Route) -> None:
        other = _user(7)
        if not state["active"]:
            other |= {"is_active": False, "status": "disabled"}
        me = _user(1, name=ADMIN["name"], email=ADMIN["email"], is_admin=True)
        pending = _user(8, status="inactive", email_verified=False)
        body = {"users": [me, other, pending], "total": 3, "page": 1, "per_page": 100}
        body["total_pages"] = 1
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    async def set_active(route: Route) -> None:
        body = route.request.post_data_json
        bodies.append(body)
        state["active"] = body["active"]
        await route.fulfill(status=204)

    api.on("GET", "/v1/admin/users", users)
    api.on("GET", "/v1/admin/invitations", {"json": []})
    api.on("PUT", "/v1/admin/users/u-7/active", set_active)
    await page.goto("/admin/users")
    row = page.locator("tr[data-user='u-7']")
    await expect(row.get_by_test_id("status")).to_have_text("active")
    await expect(page.locator("tr[data-user='u-8']").get_by_test_id("status")).to_have_text(
        "not activated"
    )
    # Yourself: no action offered.
    mine = page.locator("tr[data-user='u-1']")
    await expect(mine.get_by_role("button")).to_have_count(0)
    await expect(mine).to_contain_text("you")

    await row.get_by_role("button", name="Deactivate").click()
    dialog = page.get_by_role("dialog", name="Deactivate user7@example.com")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    assert bodies == []
    await row.get_by_role("button", name="Deactivate").click()
    await dialog.get_by_role("button", name="Deactivate").click()
    await expect(dialog).to_be_hidden()
    await expect(row.get_by_test_id("status")).to_have_text("deactivated")
    assert bodies == [{"active": False}]

    await row.get_by_role("button", name="Reactivate").click()
    dialog = page.get_by_role("dialog", name="Reactivate user7@example.com")
    await dialog.get_by_role("button", name="Reactivate").click()
    await expect(row.get_by_test_id("status")).to_have_text("active")
    assert bodies == [{"active": False}, {"active": True}]


async def test_a_refused_deactivation_is_a_toast(admin_page: Page, api: MockApi) -> None:
    page = admin_page
    _users_api(api, [[_user(7)]], 1)
    refusal = error_body(400, "bad_request", "You cannot deactivate your own account.")
    api.on("PUT", "/v1/admin/users/u-7/active", refusal)
    await page.goto("/admin/users")
    row = page.locator("tr[data-user='u-7']")
    await row.get_by_role("button", name="Deactivate").click()
    dialog = page.get_by_role("dialog", name="Deactivate user7@example.com")
    await dialog.get_by_role("button", name="Deactivate").click()
    await expect(page.get_by_text("You cannot deactivate your own account.")).to_be_visible()
    await expect(row.get_by_test_id("status")).to_have_text("active")


async def test_teams_are_paged_and_deleted_ones_greyed(admin_page: Page, api: MockApi) -> None:
    page = admin_page
    gone = _team(999, name="Gone team", deleted_at="2026-03-04T05:06:07Z")
    api.on("GET", "/v1/admin/teams", paged("teams", [[_team(n) for n in range(100)], [gone]], 101))
    await page.goto("/admin/teams")
    table = page.get_by_role("table", name="Teams")
    await expect(table.locator("tbody tr")).to_have_count(100)
    await expect(page.get_by_test_id("total")).to_have_text("101")
    await expect(
        table.locator("tr[data-team='t-5']").get_by_role("button", name="Delete Team 5")
    ).to_be_visible()
    pager = page.get_by_role("navigation", name="Teams pages")
    await pager.get_by_role("button", name="Next").click()
    row = table.locator("tr[data-team='t-999']")
    await expect(table.locator("tbody tr")).to_have_count(1)
    await expect(row.get_by_test_id("deleted")).to_contain_text("Deleted")
    await expect(row.get_by_test_id("deleted")).to_contain_text("2026")
    await expect(row.get_by_role("button")).to_have_count(0)
    await expect(row.get_by_role("switch")).to_have_count(0)
    await expect(row).to_have_class(re.compile(r"\bgone\b"))


async def test_delete_team_after_typing_its_name(admin_page: Page, api: MockApi) -> None:
    page = admin_page
    team = _team(3, name="Acme")
    team["quotas"]["usage"]["capsules"] = 4
    api.on("GET", "/v1/admin/teams", paged("teams", [[team]], 1))
    api.on("DELETE", "/v1/admin/teams/t-3", {"status": 204})
    await page.goto("/admin/teams")
    row = page.locator("tr[data-team='t-3']")
    await row.get_by_role("button", name="Delete Acme").click()
    dialog = page.get_by_role("dialog", name="Delete team Acme")
    await expect(dialog.get_by_test_id("destroys")).to_contain_text("4 capsules will be destroyed")
    confirm = dialog.get_by_role("button", name="Delete team")
    await expect(confirm).to_be_disabled()
    await dialog.get_by_label("Team name").fill("acme")
    await expect(confirm).to_be_disabled()
    assert api.count("DELETE", "/v1/admin/teams/t-3") == 0
    await dialog.get_by_label("Team name").fill("Acme")
    await confirm.click()
    await expect(dialog).to_be_hidden()
    await expect(row.get_by_test_id("deleted")).to_contain_text("Deleted")
    await expect(row.get_by_role("button")).to_have_count(0)
    assert api.count("DELETE", "/v1/admin/teams/t-3") == 1


async def test_a_refused_team_delete_is_shown_in_the_dialog(admin_page: Page, api: MockApi) -> None:
    page = admin_page
    api.on("GET", "/v1/admin/teams", paged("teams", [[_team(0, name="Platform")]], 1))
    refusal = error_body(403, "forbidden", "The platform team cannot be deleted.")
    api.on("DELETE", "/v1/admin/teams/t-0", refusal)
    await page.goto("/admin/teams")
    row = page.locator("tr[data-team='t-0']")
    await row.get_by_role("button", name="Delete Platform").click()
    dialog = page.get_by_role("dialog", name="Delete team Platform")
    await expect(dialog.get_by_test_id("destroys")).to_contain_text("no capsules")
    await dialog.get_by_label("Team name").fill("Platform")
    await dialog.get_by_role("button", name="Delete team").click()
    await expect(dialog.get_by_role("alert")).to_have_text("The platform team cannot be deleted.")
    await expect(dialog).to_be_visible()
    await expect(row.get_by_test_id("deleted")).to_have_count(0)
