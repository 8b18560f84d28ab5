"""A capsule's page lists the web server started in the real capsule, and "Open" shows what it
serves in a new tab, through the port proxy and a preview link. The dashboard is reached under a
name (`wrenn.test`), so the port's URL `{port}-{capsule_id}.wrenn.test:<port>` is one a browser
accepts; Chromium maps both names to the test server's address."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, async_playwright, expect

from ..waiting import wait_for
from .conftest import CHROMIUM_ARGS, SERVE_HOST, Account, Platform
from .test_capsules import new_capsule


@pytest.fixture
async def named_context(browser_netns: Path) -> AsyncIterator[BrowserContext]:
    rules = f"MAP wrenn.test {SERVE_HOST}, MAP *.wrenn.test {SERVE_HOST}"
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=browser_netns, args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"]
        )
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(15_000)
        yield context
        await context.close()
        await browser.close()


async def sign_in(platform: Platform, context: BrowserContext, account: Account) -> None:
    me = (await platform.api.get("/v1/me", headers=account.headers)).json()
    user = {k: me[k] for k in ("user_id", "name", "email", "team_id", "role", "is_admin")}
    session = json.dumps({"token": account.token, "user": user})
    await context.add_init_script(f"localStorage.setItem('wrenn.session', {json.dumps(session)})")


async def test_the_capsule_page_lists_a_server_and_opens_it(
    platform: Platform, named_context: BrowserContext
) -> None:
    account = await platform.signup()
    cid = (await new_capsule(platform, account))["id"]
    api, headers = platform.api, account.headers
    resp = await api.post(
        f"/v1/capsules/{cid}/exec",
        json={"cmd": "mkdir -p /tmp/srv && echo 'served from the capsule' > /tmp/srv/index.html"},
        headers=headers,
    )
    assert resp.status_code == 200 and resp.json()["exit_code"] == 0, resp.text
    command = "python3 -m http.server 8000 --bind 127.0.0.1"
    resp = await api.post(
        f"/v1/capsules/{cid}/exec",
        json={"cmd": "python3", "args": command.split()[1:], "cwd": "/tmp/srv", "background": True},
        headers=headers,
    )
    assert resp.status_code == 202, resp.text

    async def listening() -> bool:
        resp = await api.get(f"/v1/capsules/{cid}/ports", headers=headers)
        return any(p["port"] == 8000 for p in resp.json()["ports"])

    await wait_for(listening, 30, what="the server listening")

    port = platform.url.rsplit(":", 1)[1]
    await sign_in(platform, named_context, account)
    page = await named_context.new_page()
    await page.goto(f"http://wrenn.test:{port}/dashboard/capsules/{cid}")
    ports = page.get_by_role("region", name="Ports")
    server = ports.get_by_role("row").filter(has_text=command)
    await expect(server).to_contain_text("loopback only")

    async with named_context.expect_page() as opened:
        await server.get_by_role("button", name="Open port 8000").click()
    tab = await opened.value
    await expect(tab.locator("body")).to_contain_text("served from the capsule")
    # The preview token became a cookie of that host, and left the address.
    assert tab.url == f"http://8000-{cid}.wrenn.test:{port}/"
