"""Signing in with GitHub from the dashboard, in real Chromium, against a fake GitHub served over
real HTTP where the browser reaches it (the API tests' fake plus the browser-facing authorize
page).

The control plane runs without a host agent: nothing here touches capsules.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect
from pydantic import SecretStr
from sqlalchemy import update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route

from tests.threaded_server import serving as serving_in_thread
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.api.routes.oauth import SESSION_COOKIE
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models import OAuthIdentity, User
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.settings import Settings

from ..controlplane.github_fake import CLIENT_ID, CLIENT_SECRET, FakeGitHub, verified
from ..controlplane.helpers import count, signup
from .conftest import BUILD, SERVE_HOST, serving

SESSION_KEY = "wrenn.session"


class BrowserGitHub(FakeGitHub):
    """The fake GitHub, plus its authorize page: the user (always) approves at once and is sent
    back with `next_code`, or denies when `next_code` is empty."""

    def __init__(self) -> None:
        super().__init__()
        self.next_code = ""
        self.authorize_requests: list[dict[str, str]] = []

    def reset(self) -> None:
        super().reset()
        self.next_code = ""
        self.authorize_requests.clear()

    def add_user(self, code: str, github_id: int, login: str, name: str, email: str) -> None:
        self.add(
            code,
            github_id=github_id,
            login=login,
            name=name,
            public_email=email,
            emails=[verified(email)],
        )

    async def authorize(self, request: Request) -> RedirectResponse:
        params = dict(request.query_params)
        self.authorize_requests.append(params)
        if self.next_code:
            answer = {"code": self.next_code, "state": params["state"]}
        else:
            answer = {"error": "access_denied", "state": params["state"]}
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode(answer)}", status_code=302)

    def app(self) -> Starlette:
        routes = [*super().app().routes, Route("/login/oauth/authorize", self.authorize)]
        return Starlette(routes=routes)


@pytest.fixture(scope="module")
def fake_github() -> Iterator[BrowserGitHub]:
    fake = BrowserGitHub()
    with serving_in_thread(fake.app(), SERVE_HOST) as base:
        fake.base = base
        yield fake


@pytest.fixture
def github(fake_github: BrowserGitHub) -> BrowserGitHub:
    fake_github.reset()
    return fake_github


@dataclass
class ControlPlane:
    url: str
    api: httpx.AsyncClient
    db: Database


@contextlib.asynccontextmanager
async def control_plane(
    data_dir: Path, github: BrowserGitHub | None
) -> AsyncIterator[ControlPlane]:
    """The control plane with the built dashboard on a real port; GitHub login configured
    against `github` unless it is None."""
    oauth: dict[str, Any] = {}
    if github is not None:
        oauth = {
            "github_client_id": CLIENT_ID,
            "github_client_secret": SecretStr(CLIENT_SECRET),
            "github_authorize_url": f"{github.base}/login/oauth/authorize",
            "github_token_url": f"{github.base}/login/oauth/access_token",
            "github_api_url": f"{github.base}/api",
        }
    settings = Settings(
        data_dir=data_dir,
        jwt_secret=SecretStr("dashboard-oauth-secret-" + "z" * 32),
        agent_address="",
        dashboard_dir=BUILD,
        **oauth,
    )
    app = create_app(settings)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield ControlPlane(url, client, app.state.db)


@pytest.fixture
async def cp(tmp_path: Path, github: BrowserGitHub) -> AsyncIterator[ControlPlane]:
    async with control_plane(tmp_path / "cp", github) as plane:
        yield plane


async def stored_session(page: Page) -> dict[str, Any] | None:
    raw = await page.evaluate(f"localStorage.getItem({json.dumps(SESSION_KEY)})")
    return json.loads(raw) if raw else None


def github_button(page: Page):
    return page.get_by_role("link", name="Continue with GitHub")


async def open_auth_page(page: Page, url: str) -> None:
    """The login or signup page, once it has shown what the API said about the providers."""
    async with page.expect_response(lambda r: r.url.endswith("/v1/auth/oauth")) as answer:
        await page.goto(url)
    await (await answer.value).finished()
    await expect(page.get_by_label("Password")).to_be_visible()
    # A frame and a moment after the answer: the buttons it lists are rendered by now.
    await page.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 100)))")


async def test_github_button_only_when_configured(
    tmp_path: Path, cp: ControlPlane, context: BrowserContext
) -> None:
    page = await context.new_page()
    async with control_plane(tmp_path / "plain", github=None) as plain:
        assert (await plain.api.get("/v1/auth/oauth")).json() == {"providers": []}
        for path in ("/login", "/signup"):
            await open_auth_page(page, plain.url + path)
            await expect(github_button(page)).to_have_count(0)
            await expect(page.get_by_text("or", exact=True)).to_have_count(0)

    for path in ("/login", "/signup"):
        await open_auth_page(page, cp.url + path)
        button = github_button(page)
        await expect(button).to_be_visible()
        assert await button.get_attribute("href") == "/v1/auth/oauth/github"


async def test_github_login_signs_in_and_finds_the_same_account(
    cp: ControlPlane, github: BrowserGitHub, context: BrowserContext
) -> None:
    github.add_user("first", 4242, "ada-l", "Ada Lovelace", "ada@example.com")
    # The same GitHub account later, renamed: still the same Wrenn account.
    github.add_user("second", 4242, "ada2", "Countess", "ada@example.com")
    page = await context.new_page()
    visited: list[str] = []
    page.on("framenavigated", lambda frame: visited.append(frame.url))

    github.next_code = "first"
    await page.goto(cp.url + "/login")
    await github_button(page).click()
    await expect(page).to_have_url(cp.url + "/dashboard/capsules")
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_text("Ada Lovelace", exact=True)).to_be_visible()
    await expect(nav.get_by_text("ada@example.com", exact=True)).to_be_visible()
    # The flow went through GitHub and back, with the API's own callback.
    assert github.authorize_requests[0]["redirect_uri"] == (
        cp.url + "/v1/auth/oauth/github/callback"
    )
    # The session never appeared in an address: the callback page took it from its cookie,
    # which is gone now.
    assert cp.url + "/auth/github/callback" in visited, visited
    assert not any("token" in u for u in visited), visited
    assert SESSION_COOKIE not in {c["name"] for c in await page.context.cookies()}
    first = await stored_session(page)
    assert first is not None and first["user"]["name"] == "Ada Lovelace"
    me = await cp.api.get("/v1/me", headers={"Authorization": f"Bearer {first['token']}"})
    assert me.status_code == 200 and me.json()["providers"] == ["github"]
    # An account with GitHub as its only way in cannot disconnect it.
    await expect(nav.get_by_text("Signs in with GitHub")).to_be_visible()
    await expect(nav.get_by_role("button", name="Disconnect GitHub", exact=True)).to_have_count(0)
    await page.go_back()
    await expect(page).to_have_url(cp.url + "/login")

    await page.goto(cp.url + "/dashboard/capsules")
    await nav.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(cp.url + "/login")
    github.next_code = "second"
    await github_button(page).click()
    await expect(page).to_have_url(cp.url + "/dashboard/capsules")
    await expect(nav.get_by_text("Ada Lovelace", exact=True)).to_be_visible()
    second = await stored_session(page)
    assert second is not None and second["user"]["user_id"] == first["user"]["user_id"]
    assert second["user"]["team_id"] == first["user"]["team_id"]
    assert await count(cp.db, User) == 1
    assert await count(cp.db, OAuthIdentity) == 1


async def test_denied_authorization_explains_and_links_back(
    cp: ControlPlane, github: BrowserGitHub, context: BrowserContext
) -> None:
    page = await context.new_page()
    github.next_code = ""  # the user clicks "Cancel" on GitHub
    await page.goto(cp.url + "/signup")
    await github_button(page).click()
    await expect(page).to_have_url(cp.url + "/auth/github/callback?error=access_denied")
    await expect(page.get_by_role("heading")).to_have_text("Could not sign in with GitHub")
    await expect(page.get_by_role("alert")).to_contain_text("cancelled or refused")
    assert await stored_session(page) is None
    await page.get_by_role("link", name="Back to sign in").click()
    await expect(page).to_have_url(cp.url + "/login")
    assert github.token_requests == []


async def test_email_of_an_unlinkable_account_is_refused(
    cp: ControlPlane, github: BrowserGitHub, context: BrowserContext
) -> None:
    # A verified email of a live password account links (see the API tests); the API refuses
    # an email whose account was deleted: that account cannot be linked nor the email reused.
    existing = await signup(cp.api, email="ada@example.com")
    async with cp.db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(User)
            .where(User.id == ids.USER.parse(existing["user_id"]))
            .values(deleted_at=User.created_at)
        )
    github.add_user("code-ada", 4242, "ada-l", "Ada Lovelace", "ada@example.com")
    github.next_code = "code-ada"
    page = await context.new_page()
    await page.goto(cp.url + "/login")
    await github_button(page).click()
    await expect(page).to_have_url(cp.url + "/auth/github/callback?error=email_taken")
    await expect(page.get_by_role("alert")).to_have_text(
        "An account with this email already exists, and it has not confirmed the address "
        "yet: sign in with its password (or reset the password by mail), then connect GitHub "
        "from your account."
    )
    assert await stored_session(page) is None
    await page.get_by_role("link", name="Back to sign in").click()
    await expect(page).to_have_url(cp.url + "/login")
    assert await count(cp.db, OAuthIdentity) == 0


async def open_signed_in(context: BrowserContext, cp: ControlPlane, token: str) -> Page:
    """A page with `token`'s session in localStorage, as the login page leaves it."""
    me = (await cp.api.get("/v1/me", headers={"Authorization": f"Bearer {token}"})).json()
    user = {k: me[k] for k in ("user_id", "name", "email", "team_id", "role", "is_admin")}
    saved = json.dumps({"token": token, "user": user})
    await context.add_init_script(
        f"localStorage.getItem('{SESSION_KEY}') === null && "
        f"localStorage.setItem('{SESSION_KEY}', {json.dumps(saved)})"
    )
    return await context.new_page()


async def test_connect_and_disconnect_github(
    cp: ControlPlane, github: BrowserGitHub, context: BrowserContext
) -> None:
    bob = await signup(cp.api, email="bob@example.com", name="Bob Builder")
    # A GitHub account with another email: connecting links it all the same.
    github.add_user("code-bob", 7, "bob-gh", "Bobby", "bob@users.noreply.github.com")
    github.next_code = "code-bob"
    page = await open_signed_in(context, cp, bob["token"])
    await page.goto(cp.url + "/dashboard/keys")
    nav = page.get_by_role("navigation", name="Main")
    await nav.get_by_role("button", name="Connect GitHub", exact=True).click()
    # Back on the page the flow started from, with the same session.
    await expect(page).to_have_url(cp.url + "/dashboard/keys")
    await expect(page.get_by_text("GitHub connected")).to_be_visible()
    await expect(nav.get_by_role("button", name="Disconnect GitHub", exact=True)).to_be_visible()
    assert "token" not in page.url
    saved = await stored_session(page)
    assert saved is not None and saved["token"] == bob["token"]
    headers = {"Authorization": f"Bearer {bob['token']}"}
    assert (await cp.api.get("/v1/me", headers=headers)).json()["providers"] == ["github"]

    await nav.get_by_role("button", name="Disconnect GitHub", exact=True).click()
    confirm = page.get_by_role("dialog", name="Disconnect GitHub", exact=True)
    await confirm.get_by_role("button", name="Disconnect", exact=True).click()
    await expect(nav.get_by_role("button", name="Connect GitHub", exact=True)).to_be_visible()
    assert (await cp.api.get("/v1/me", headers=headers)).json()["providers"] == []


async def test_connecting_a_github_account_linked_elsewhere_is_refused(
    cp: ControlPlane, github: BrowserGitHub, context: BrowserContext
) -> None:
    # Ada signs up with GitHub (through the API, following the redirects like a browser).
    github.add_user("code-ada", 4242, "ada-l", "Ada Lovelace", "ada@example.com")
    github.next_code = "code-ada"
    async with httpx.AsyncClient(base_url=cp.url, follow_redirects=True) as ada_browser:
        landed = await ada_browser.get("/v1/auth/oauth/github")
        assert landed.url.path == "/auth/github/callback" and not landed.url.params
        handed = await ada_browser.post("/v1/auth/oauth/github/session")
        assert handed.status_code == 200 and handed.json()["email"] == "ada@example.com"
    # Bob tries to connect the same GitHub account to his.
    bob = await signup(cp.api, email="bob@example.com", name="Bob Builder")
    page = await open_signed_in(context, cp, bob["token"])
    await page.goto(cp.url + "/dashboard/keys")
    await page.get_by_role("button", name="Connect GitHub", exact=True).click()
    await expect(page).to_have_url(cp.url + "/auth/github/callback?error=access_denied")
    await expect(page.get_by_role("heading")).to_have_text("Could not connect GitHub")
    await expect(page.get_by_role("alert")).to_contain_text(
        "already connected to another Wrenn account"
    )
    # Still signed in as Bob: the way back is to the dashboard.
    await page.get_by_role("link", name="Back to the dashboard").click()
    await expect(page).to_have_url(cp.url + "/dashboard/keys")
    await expect(page.get_by_role("button", name="Connect GitHub", exact=True)).to_be_visible()
    saved = await stored_session(page)
    assert saved is not None and saved["user"]["user_id"] == bob["user_id"]


async def test_a_token_in_the_callback_address_signs_nobody_in(
    cp: ControlPlane, context: BrowserContext
) -> None:
    """Login CSRF: a link to the callback page carrying someone's session (the attacker's) must
    neither sign a browser in nor replace the session it has."""
    mallory = await signup(cp.api, email="mallory@example.com", name="Mallory")
    params = {
        "token": mallory["token"],
        "user_id": mallory["user_id"],
        "team_id": mallory["team_id"],
        "email": "mallory@example.com",
    }
    trap = cp.url + "/auth/github/callback?" + urlencode(params)

    page = await context.new_page()
    await page.goto(trap)
    await expect(page.get_by_role("alert")).to_contain_text("no sign-in to complete")
    assert await stored_session(page) is None
    await page.get_by_role("link", name="Back to sign in").click()
    await expect(page).to_have_url(cp.url + "/login")
    assert await stored_session(page) is None

    # Signed in as Bob, the same link leaves Bob signed in as Bob.
    bob = await signup(cp.api, email="bob@example.com", name="Bob Builder")
    bobs = await open_signed_in(context, cp, bob["token"])
    await bobs.goto(trap)
    await expect(bobs).to_have_url(cp.url + "/dashboard/capsules")
    nav = bobs.get_by_role("navigation", name="Main")
    await expect(nav.get_by_text("Bob Builder", exact=True)).to_be_visible()
    saved = await stored_session(bobs)
    assert saved is not None and saved["token"] == bob["token"]
