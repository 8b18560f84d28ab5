"""The capsule list: rendering, the create dialog, and what the page does when the API hangs or
goes away (polling goes on, one notice, a busy button comes back)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Page, Route, expect

from tests.waiting import wait_for

from .conftest import MockApi, hang


def capsule(cid: str, status: str = "running", **extra: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "template": "minimal",
        "status": status,
        "status_reason": None,
        "vcpus": 1,
        "memory_mb": 512,
        "disk_size_mb": 2048,
        "timeout_sec": 0,
        "created_at": "2026-01-01T00:00:00Z",
        "last_updated": "2026-01-01T00:00:00Z",
        **extra,
    }


TEMPLATES = [
    {"name": "minimal", "type": "image", "platform": True, "vcpus": None, "memory_mb": None},
    {"name": "py-snap", "type": "snapshot", "platform": False, "vcpus": 2, "memory_mb": 1024},
]


async def test_list_renders_each_capsule(signed_in: Page, api: MockApi) -> None:
    page = signed_in
    api.on(
        "GET",
        "/v1/capsules",
        {"json": [capsule("cl-aaa"), capsule("cl-bbb", "paused", status_reason="idle timeout")]},
    )
    await page.goto("/dashboard/capsules")
    table = page.get_by_role("table", name="Capsules")
    await expect(table.locator("tbody tr")).to_have_count(2)
    await expect(page.get_by_label("Running capsules")).to_have_text("1 running")
    running = table.locator("tr[data-capsule=cl-aaa]")
    await expect(running.get_by_role("button", name="Pause cl-aaa")).to_be_visible()
    paused = table.locator("tr[data-capsule=cl-bbb]")
    await expect(paused.get_by_role("button", name="Resume cl-bbb")).to_be_visible()
    await expect(paused.get_by_test_id("status-reason")).to_have_text("idle timeout")
    await expect(running.get_by_role("link", name="cl-aaa")).to_have_attribute(
        "href", "/dashboard/capsules/cl-aaa"
    )


async def test_the_list_asks_for_ended_capsules_too(signed_in: Page, api: MockApi) -> None:
    # The API leaves stopped and errored capsules out unless asked: the page asks, so a capsule
    # that ended stays visible with its reason.
    page = signed_in
    asked: list[str] = []

    async def listed(route: Route) -> None:
        asked.append(route.request.url)
        ended = capsule("cl-dead", "error", status_reason="out of memory")
        await route.fulfill(json=[capsule("cl-aaa"), ended])

    api.on("GET", "/v1/capsules", listed)
    await page.goto("/dashboard/capsules")
    dead = page.locator("tr[data-capsule=cl-dead]")
    await expect(dead.get_by_test_id("status-reason")).to_have_text("out of memory")
    statuses = parse_qs(urlsplit(asked[0]).query)["status"][0].split(",")
    assert {"running", "paused", "stopped", "error"} <= set(statuses)


async def test_create_dialog_sends_the_shape_and_lists_the_new_capsule(
    signed_in: Page, api: MockApi
) -> None:
    page = signed_in
    listed = [capsule("cl-aaa")]
    api.on("GET", "/v1/capsules", {"json": listed})
    api.on("GET", "/v1/snapshots", {"json": TEMPLATES})
    sent: list[dict[str, Any]] = []

    async def create(route: Route) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        listed.append(capsule("cl-new", vcpus=2, memory_mb=1024))
        api.on("GET", "/v1/capsules", {"json": listed})
        await route.fulfill(status=201, json=listed[-1])

    api.on("POST", "/v1/capsules", create)
    await page.goto("/dashboard/capsules")
    await page.get_by_role("button", name="New capsule").click()
    dialog = page.get_by_role("dialog", name="New capsule")
    await expect(dialog).to_be_visible()
    # A snapshot brings the shape it was taken with.
    await dialog.get_by_label("Template").select_option("py-snap")
    await expect(dialog.get_by_label("vCPUs")).to_have_value("2")
    await dialog.get_by_label("Timeout (seconds)").fill("300")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog).to_be_hidden()
    await expect(
        page.get_by_role("status").filter(has_text="Capsule cl-new created")
    ).to_be_visible()
    await expect(page.locator("tr[data-capsule=cl-new]")).to_be_visible()
    assert sent == [{"template": "py-snap", "vcpus": 2, "memory_mb": 1024, "timeout_sec": 300}]


async def test_create_refusal_stays_in_the_dialog(signed_in: Page, api: MockApi) -> None:
    page = signed_in
    api.on("GET", "/v1/capsules", {"json": []})
    api.on("GET", "/v1/snapshots", {"json": TEMPLATES})
    api.on(
        "POST",
        "/v1/capsules",
        {
            "status": 409,
            "json": {"error": {"code": "quota_exceeded", "message": "at most 1 capsules"}},
        },
    )
    await page.goto("/dashboard/capsules")
    await page.get_by_role("button", name="New capsule").click()
    dialog = page.get_by_role("dialog", name="New capsule")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog.get_by_role("alert")).to_have_text("at most 1 capsules")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("button", name="Create")).to_be_enabled()


async def test_first_load_failure_is_inline(signed_in: Page, api: MockApi) -> None:
    page = signed_in
    api.on(
        "GET",
        "/v1/capsules",
        {"status": 500, "json": {"error": {"code": "internal", "message": "Boom."}}},
    )
    await page.goto("/dashboard/capsules")
    await expect(page.locator("main").get_by_role("alert")).to_have_text("Boom.")
    await expect(page.get_by_test_id("refresh-notice")).to_have_count(0)


async def test_polling_outlives_a_hung_request_and_an_outage_with_one_notice(
    signed_in: Page, api: MockApi
) -> None:
    page = signed_in
    await page.clock.install()
    api.on("GET", "/v1/capsules", {"json": [capsule("cl-aaa")]})
    await page.goto("/dashboard/capsules")
    await expect(page.locator("tr[data-capsule=cl-aaa]")).to_be_visible()
    notice = page.get_by_test_id("refresh-notice")

    # The API hangs: the next refresh never gets an answer, and gives up at its deadline.
    reply, release = hang()
    api.on("GET", "/v1/capsules", reply)
    try:
        await page.clock.run_for(5_000)
        await wait_for(lambda: api.count("GET", "/v1/capsules") == 2)
        await expect(notice).to_have_count(0)
        await page.clock.run_for(30_000)
        await expect(notice).to_contain_text("did not answer in time")

        # Then it is down: every refresh fails at once, and still one notice, no toasts.
        api.on("GET", "/v1/capsules", {"abort": True})
        before = api.count("GET", "/v1/capsules")
        for _ in range(4):
            await page.clock.run_for(5_000)
        await wait_for(lambda: api.count("GET", "/v1/capsules") >= before + 4)
        await expect(notice).to_have_count(1)
        await expect(notice).to_contain_text("cannot be reached")
        await expect(page.locator(".toast")).to_have_count(0)
        # What was shown stays shown.
        await expect(page.locator("tr[data-capsule=cl-aaa]")).to_be_visible()

        # It comes back: the notice goes, and the list is fresh.
        api.on("GET", "/v1/capsules", {"json": [capsule("cl-aaa"), capsule("cl-back")]})
        await page.clock.run_for(5_000)
        await expect(page.locator("tr[data-capsule=cl-back]")).to_be_visible()
        await expect(notice).to_have_count(0)
    finally:
        release.set()


async def test_a_hung_action_does_not_leave_its_button_busy(signed_in: Page, api: MockApi) -> None:
    page = signed_in
    await page.clock.install()
    api.on("GET", "/v1/capsules", {"json": [capsule("cl-aaa")]})
    reply, release = hang()
    api.on("POST", "/v1/capsules/cl-aaa/pause", reply)
    try:
        await page.goto("/dashboard/capsules")
        pause = page.get_by_role("button", name="Pause cl-aaa")
        await pause.click()
        await expect(pause).to_be_disabled()
        await wait_for(lambda: api.count("POST", "/v1/capsules/cl-aaa/pause") == 1)
        await page.clock.run_for(30_000)
        await expect(pause).to_be_enabled()
        await expect(
            page.get_by_role("alert").filter(has_text="did not answer in time")
        ).to_have_count(1)
    finally:
        release.set()


async def test_leaving_the_page_cancels_its_requests(signed_in: Page, api: MockApi) -> None:
    page = signed_in
    api.on("GET", "/v1/capsules", {"json": [capsule("cl-aaa")]})
    api.on("GET", "/v1/api-keys", {"json": []})
    reply, release = hang()
    api.on("POST", "/v1/capsules/cl-aaa/pause", reply)
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    try:
        await page.goto("/dashboard/capsules")
        await page.get_by_role("button", name="Pause cl-aaa").click()
        await wait_for(lambda: api.count("POST", "/v1/capsules/cl-aaa/pause") == 1)
        await page.get_by_role("link", name="API keys").click()
        await expect(page.get_by_role("heading", name="API keys")).to_be_visible()
        await wait_for(lambda: any(u.endswith("/pause") for u in failed))
        # Cancelled on purpose: nobody is told it failed.
        await expect(page.get_by_role("alert")).to_have_count(0)
    finally:
        release.set()
