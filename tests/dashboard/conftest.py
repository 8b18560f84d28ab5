"""The dashboard in real Chromium against the whole platform: the built app (web/build) served
by a control plane on a real port, over the integration tests' real host agent, with a fresh
SQLite database per test. Pages are driven with Playwright (Debian's /usr/bin/chromium).

`web/build` must exist (`npm --prefix web ci && npm --prefix web run build`; scripts/test.sh
does it). Every capsule and template a test made is removed from the agent afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from pydantic import SecretStr
from sqlalchemy import select

from tests.ports import free_port
from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models.capsules import Sandbox, Template
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.settings import Settings
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import PASSWORD
from ..integration.conftest import SECRET

pytestmark = pytest.mark.integration

BUILD = Path(__file__).resolve().parents[2] / "web" / "build"
CHROMIUM = "/usr/bin/chromium"
# Chromium's network namespace and the veth pair to it; test servers listen on SERVE_HOST.
BROWSER_NS = "wrenn-browser"
_VETH_HOST, _VETH_NS = "brwsr0", "brwsr1"  # not wv*: the capsule firewall drops those
SERVE_HOST, _BROWSER_IP = "10.254.254.1", "10.254.254.2"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_emails = itertools.count()
# Pages poll and charts load lazily; a busy CI machine needs more than Playwright's 5 s default.
expect.set_options(timeout=15_000)


@dataclass
class Account:
    email: str
    name: str
    token: str
    user_id: str
    team_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Platform:
    url: str
    api: httpx.AsyncClient  # the REST API, for setting up what a page shows
    db: Database

    async def signup(self, name: str = "Dana Scully") -> Account:
        """A new account (the first of a platform is its admin) with its own team."""
        email = f"user{next(_emails)}-{int(time.time() * 1000) % 100000}@example.com"
        resp = await self.api.post(
            "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": name}
        )
        assert resp.status_code == 201, resp.text
        body = resp.json()
        return Account(email, name, body["token"], body["user_id"], body["team_id"])


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="session")
def browser_netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A network namespace for Chromium, joined to this host by a veth pair. On the host's own
    stack Chromium sees every capsule's veth come and go and aborts in-flight requests with
    net::ERR_NETWORK_CHANGED; in here nothing changes. Yields a Chromium that runs in it."""
    for stale in (["ip", "netns", "del", BROWSER_NS], ["ip", "link", "del", _VETH_HOST]):
        subprocess.run(stale, capture_output=True)  # left by a killed run
    _sh("ip", "netns", "add", BROWSER_NS)
    try:
        _sh("ip", "link", "add", _VETH_HOST, "type", "veth", "peer", "name", _VETH_NS)
        _sh("ip", "link", "set", _VETH_NS, "netns", BROWSER_NS)
        _sh("ip", "addr", "add", f"{SERVE_HOST}/30", "dev", _VETH_HOST)
        _sh("ip", "link", "set", _VETH_HOST, "up")
        inside = ("ip", "netns", "exec", BROWSER_NS)
        _sh(*inside, "ip", "addr", "add", f"{_BROWSER_IP}/30", "dev", _VETH_NS)
        _sh(*inside, "ip", "link", "set", _VETH_NS, "up")
        _sh(*inside, "ip", "link", "set", "lo", "up")
        wrapper = tmp_path_factory.mktemp("chromium") / "chromium"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {BROWSER_NS} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        yield wrapper
    finally:
        subprocess.run(["ip", "netns", "del", BROWSER_NS], capture_output=True)
        subprocess.run(["ip", "link", "del", _VETH_HOST], capture_output=True)


@pytest.fixture(scope="session")
async def browser(browser_netns: Path) -> AsyncIterator[Browser]:
    if not BUILD.joinpath("200.html").is_file():
        pytest.fail(
            "the dashboard is not built: run `npm --prefix web ci && npm --prefix web run build`"
        )
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=browser_netns, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """`app` on a real port where the browser reaches it; yields its base URL."""
    port = free_port()
    # Keep-alive longer than any test: with uvicorn's 5 s, the tests' API client could send a
    # request on a connection idle through slow page steps just as the server closed it (a
    # ReadError, seen in a full run).
    config = uvicorn.Config(
        app, host=SERVE_HOST, port=port, log_config=None, access_log=False, timeout_keep_alive=600
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "the server did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://{SERVE_HOST}:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def platform(
    tmp_path: Path,
    agent_process: Any,
    agent: AgentClient,
) -> AsyncIterator[Platform]:
    settings = Settings(
        data_dir=tmp_path / "cp",
        jwt_secret=SecretStr("dashboard-test-secret-" + "z" * 32),
        agent_address=agent_process.target,
        agent_secret=SecretStr(SECRET),
        reconcile_interval_sec=1.0,
        stats_sample_interval_sec=1.0,
        dashboard_dir=BUILD,
    )
    app = create_app(settings)
    db: Database = app.state.db
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=120) as client:
        yield Platform(url, client, db)
        async with db.sessionmaker() as session:
            capsules = list(await session.scalars(select(Sandbox.id)))
            templates = list(
                await session.scalars(
                    select(Template.storage_name).where(
                        Template.storage_name != settings.base_template
                    )
                )
            )
    for sandbox_id in capsules:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=ids.SANDBOX.format(sandbox_id)))
    for name in templates:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await agent.delete_snapshot(pb.DeleteSnapshotRequest(name=name))


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    yield ctx
    await ctx.close()


SignIn = Callable[[Account], Awaitable[Page]]


@pytest.fixture
def signed_in(platform: Platform, context: BrowserContext) -> SignIn:
    """A page of the dashboard with `account` signed in (its session put in localStorage, as
    the login page would; test_auth.py covers the login page itself)."""

    async def open_as(account: Account) -> Page:
        session = {"token": account.token, "user": None}
        me = (await platform.api.get("/v1/me", headers=account.headers)).json()
        session["user"] = {
            "user_id": me["user_id"],
            "name": me["name"],
            "email": me["email"],
            "team_id": me["team_id"],
            "role": me["role"],
            "is_admin": me["is_admin"],
        }
        await context.add_init_script(
            f"localStorage.setItem('wrenn.session', {json.dumps(json.dumps(session))})"
        )
        page = await context.new_page()
        return page

    return open_as
