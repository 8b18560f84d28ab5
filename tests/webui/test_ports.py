"""The Ports section of a capsule's page against a mocked API: the listening ports with their
address and process, refreshed on a timer and by its button; "Open" asks for a preview link and
opens it in a new tab cut off from the dashboard, or shows the link when the browser blocks the
tab; a failed link request is a toast; a paused capsule has no ports to list."""

from __future__ import annotations

from typing import Any

from playwright.async_api import BrowserContext, Locator, Page, Route, expect

from tests.waiting import wait_for

from .conftest import MockApi
from .test_capsules import capsule

CID = "cl-aaa"
PREVIEW = "http://8000-cl-aaa.preview.test/?wrenn_preview=tok3n"


def port(number: int, address: str, pid: int | None, command: str | None) -> dict[str, Any]:
    return {
        "port": number,
        "address": address,
        "pid": pid,
        "command": command,
        "url": f"http://{number}-{CID}.preview.test",
    }


SERVER = port(8000, "0.0.0.0", 42, "python3 -m http.server 8000")
LOCAL = port(3000, "127.0.0.1", 77, "node server.js")


async def open_page(page: Page, api: MockApi, ports: list[dict[str, Any]]) -> Locator:
    api.on("GET", f"/v1/capsules/{CID}", {"json": capsule(CID)})
    api.on("GET", f"/v1/capsules/{CID}/metrics", {"json": {"points": []}})
    api.on("POST", f"/v1/capsules/{CID}/files/list", {"json": {"entries": []}})
    api.on("GET", f"/v1/capsules/{CID}/ports", {"json": {"ports": ports}})
    await page.goto(f"/dashboard/capsules/{CID}")
    return page.get_by_role("region", name="Ports")


def row(section: Locator, number: int) -> Locator:
    return section.get_by_role("row").filter(has=section.page.get_by_text(str(number), exact=True))


async def test_listening_ports_refresh_on_a_timer_and_on_demand(
    signed_in: Page, api: MockApi
) -> None:
    page = signed_in
    await page.clock.install()
    ports = await open_page(page, api, [LOCAL, SERVER])
    local, server = row(ports, 3000), row(ports, 8000)
    await expect(local).to_contain_text("127.0.0.1")
    await expect(local).to_contain_text("loopback only")
    await expect(local).to_contain_text("node server.js")
    await expect(local).to_contain_text("pid 77")
    await expect(server).to_contain_text("every address")
    await expect(server).to_contain_text("python3 -m http.server 8000")

    # A new server shows up on the next refresh, without a click.
    calls = api.count("GET", f"/v1/capsules/{CID}/ports")
    vite = port(5173, "::", None, None)
    api.on("GET", f"/v1/capsules/{CID}/ports", {"json": {"ports": [LOCAL, vite, SERVER]}})
    await page.clock.run_for(5_000)
    await expect(row(ports, 5173)).to_contain_text("unknown")
    assert api.count("GET", f"/v1/capsules/{CID}/ports") == calls + 1

    # The button refreshes at once; a server that stopped leaves the list.
    api.on("GET", f"/v1/capsules/{CID}/ports", {"json": {"ports": [SERVER]}})
    await ports.get_by_role("button", name="Refresh ports").click()
    await expect(row(ports, 3000)).to_have_count(0)
    await expect(row(ports, 5173)).to_have_count(0)
    await expect(row(ports, 8000)).to_be_visible()

    # Nothing listening: said so.
    api.on("GET", f"/v1/capsules/{CID}/ports", {"json": {"ports": []}})
    await ports.get_by_role("button", name="Refresh ports").click()
    await expect(ports.get_by_role("status")).to_contain_text("Nothing listens")


async def test_open_makes_a_preview_link_and_opens_it_in_a_new_tab(
    context: BrowserContext, signed_in: Page, api: MockApi
) -> None:
    page = signed_in
    sent: list[str | None] = []

    async def mint(route: Route) -> None:
        sent.append(route.request.post_data)
        body = {"url": PREVIEW, "port": 8000, "expires_at": "2026-01-01T00:05:00Z"}
        await route.fulfill(json=body)

    async def preview(route: Route) -> None:
        await route.fulfill(body="<title>served</title>capsule app", content_type="text/html")

    api.on("POST", f"/v1/capsules/{CID}/ports/8000/url", mint)
    await context.route("http://8000-cl-aaa.preview.test/**", preview)
    ports = await open_page(page, api, [SERVER])
    async with context.expect_page() as opened:
        await row(ports, 8000).get_by_role("button", name="Open port 8000").click()
    tab = await opened.value
    await expect(tab).to_have_title("served")
    assert tab.url == PREVIEW
    assert await tab.evaluate("window.opener") is None  # the capsule's page cannot reach back
    assert sent == [None]  # the API's default lifetime
    await expect(ports.get_by_role("link")).to_have_count(0)


async def test_a_blocked_tab_shows_the_link_and_a_refusal_is_a_toast(
    signed_in: Page, api: MockApi
) -> None:
    page = signed_in
    await page.add_init_script("window.open = () => null")  # as a popup blocker answers
    body = {"url": PREVIEW, "port": 8000, "expires_at": "2026-01-01T00:05:00Z"}
    api.on("POST", f"/v1/capsules/{CID}/ports/8000/url", {"json": body})
    ports = await open_page(page, api, [SERVER])
    await row(ports, 8000).get_by_role("button", name="Open port 8000").click()
    link = ports.get_by_role("link", name="open port 8000")
    await expect(link).to_have_attribute("href", PREVIEW)
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")

    refusal = {"code": "invalid_state", "message": "capsule cl-aaa is paused: resume it first"}
    api.on(
        "POST",
        f"/v1/capsules/{CID}/ports/8000/url",
        {"status": 409, "json": {"error": refusal}},
    )
    await row(ports, 8000).get_by_role("button", name="Open port 8000").click()
    await expect(page.locator(".toast")).to_contain_text("resume it first")
    await expect(row(ports, 8000).get_by_role("button", name="Open port 8000")).to_be_enabled()


async def test_a_paused_capsule_lists_no_ports(signed_in: Page, api: MockApi) -> None:
    page = signed_in
    api.on("GET", f"/v1/capsules/{CID}", {"json": capsule(CID, status="paused")})
    api.on("GET", f"/v1/capsules/{CID}/metrics", {"json": {"points": []}})
    await page.goto(f"/dashboard/capsules/{CID}")
    await expect(page.get_by_text("Listening ports are shown only while")).to_be_visible()
    await wait_for(lambda: api.count("GET", f"/v1/capsules/{CID}/metrics") >= 1)
    assert api.count("GET", f"/v1/capsules/{CID}/ports") == 0
