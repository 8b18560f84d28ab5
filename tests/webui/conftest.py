"""The dashboard in Chromium against a mocked API: no root, no gVisor, no control plane behind it.

The built dashboard (web/build) is served on 127.0.0.1 by the control plane's own dashboard
serving (same shell, same CSP headers), and every /v1 call the page makes is answered by the test
through Playwright's request routing (`MockApi`). A call the test did not expect fails the test.
Chromium runs as the current user, on the host's network stack.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    async_playwright,
    expect,
)
from playwright.async_api import Error as PlaywrightError

from tests.threaded_server import serving
from wrenn_server.controlplane.api import dashboard

# web/build, or another build of the dashboard given by WRENN_WEB_BUILD.
BUILD = Path(
    os.environ.get("WRENN_WEB_BUILD") or Path(__file__).resolve().parents[2] / "web" / "build"
)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # as the current user, without the setuid sandbox helper
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
expect.set_options(timeout=15_000)

USER = {
    "user_id": "u-1",
    "name": "Dana Scully",
    "email": "dana@example.com",
    "team_id": "t-1",
    "role": "owner",
    "is_admin": False,
}
TEAM = {
    "id": "t-1",
    "name": "Dana's team",
    "slug": "danas-team",
    "is_byoc": False,
    "role": "owner",
    "created_at": "2026-01-01T00:00:00Z",
}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# A JWT as the dashboard reads it (claims only: the signature is the API's business).
TOKEN = (
    f"{_b64({'alg': 'HS256'})}.{_b64({'sub': 'u-1', 'team_id': 't-1', 'exp': 4_000_000_000})}.sig"
)


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    return {"status": status, "json": {"error": {"code": code, "message": message}}}


Reply = dict[str, Any] | Callable[[Route], Awaitable[None]]


@dataclass
class MockApi:
    """Answers the page's /v1 calls: `on(method, path, reply)` where the path may be a regex and
    the reply is `{"json": ..., "status": ...}`, `{"abort": True}` (the connection fails), or an
    async function handling the route itself (to delay or never answer). The latest `on` for a
    call wins. `calls` records (method, path) of every call."""

    handlers: list[tuple[str, re.Pattern[str], Reply]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def on(self, method: str, path: str, reply: Reply) -> None:
        self.handlers.insert(0, (method, re.compile(path + "$"), reply))

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.calls if m == method and re.fullmatch(path, p))

    async def handle(self, route: Route) -> None:
        request = route.request
        path = request.url.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0]
        path = "/" + path
        self.calls.append((request.method, path))
        for method, pattern, reply in self.handlers:
            if method == request.method and pattern.match(path):
                if callable(reply):
                    await reply(route)
                elif reply.get("abort"):
                    await route.abort("connectionrefused")
                else:
                    status = reply.get("status", 200)
                    body = None if status == 204 else json.dumps(reply.get("json"))
                    await route.fulfill(status=status, content_type="application/json", body=body)
                return
        self.unexpected.append(f"{request.method} {path}")
        await route.fulfill(status=501, body="not mocked")


def hang() -> tuple[Callable[[Route], Awaitable[None]], asyncio.Event]:
    """A reply that never comes (until the event is set, then the call fails): a hung API."""
    release = asyncio.Event()

    async def reply(route: Route) -> None:
        await release.wait()
        # The page may have cancelled the request meanwhile (its deadline, or leaving the page).
        with contextlib.suppress(PlaywrightError):
            await route.abort("timedout")

    return reply, release


@pytest.fixture(scope="session")
def site() -> Iterator[str]:
    if not BUILD.joinpath("200.html").is_file():
        pytest.fail("the dashboard is not built: run `bash scripts/build-web.sh`")
    app = FastAPI()
    dashboard.install(app, BUILD)
    with serving(app) as url:
        yield url


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser, site: str) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(base_url=site, viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    yield ctx
    await ctx.close()


@pytest.fixture
async def api(context: BrowserContext) -> AsyncIterator[MockApi]:
    mock = MockApi()
    # What every signed-in page asks for: the teams, and the OAuth providers (none).
    mock.on("GET", "/v1/teams", {"json": [TEAM]})
    mock.on("GET", "/v1/auth/oauth", {"json": {"providers": []}})
    mock.on("GET", "/v1/auth/options", {"json": {"signup": "open", "password_reset": True}})
    await context.route(re.compile(r"^[^?]*://[^/]+/v1(/|$|\?)"), mock.handle)
    yield mock
    assert not mock.unexpected, f"calls the test did not mock: {mock.unexpected}"


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest.fixture
async def signed_in(context: BrowserContext, page: Page) -> Page:
    """`page`, with a session in localStorage as the login page leaves it."""
    session = json.dumps({"token": TOKEN, "user": USER})
    await context.add_init_script(f"localStorage.setItem('wrenn.session', {json.dumps(session)});")
    return page
