"""A fake GitHub for the OAuth tests, served over real HTTP on 127.0.0.1, with the fixtures and
helpers that drive a login through it.

The fake speaks the three endpoints the server calls (token exchange, /user, /user/emails); the
browser side of the flow is a test client, which keeps the flow's cookies between the start
route, the callback and the session exchange like a browser would. The fixtures are registered
in conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wrenn_server.controlplane.api.routes.oauth import SESSION_COOKIE
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.settings import Settings

from ..threaded_server import serving
from .helpers import assert_error

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"
PROVIDER_SECRET_DETAIL = "provider-internal-detail-xyz"
CALLBACK_URI = "http://wrenn.test/v1/auth/oauth/github/callback"


class FakeGitHub:
    """GitHub's token, /user and /user/emails endpoints; `accounts` maps a code to a user."""

    def __init__(self) -> None:
        self.base = ""
        self.accounts: dict[str, dict[str, Any]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.fail_user = False

    def reset(self) -> None:
        self.accounts.clear()
        self.token_requests.clear()
        self.fail_user = False

    def add(
        self,
        code: str,
        *,
        github_id: int,
        login: str,
        name: str | None,
        public_email: str | None,
        emails: list[dict[str, Any]],
    ) -> None:
        self.accounts[code] = {
            "user": {"id": github_id, "login": login, "name": name, "email": public_email},
            "emails": emails,
        }

    def _account(self, request: Request) -> dict[str, Any] | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer tok-"):
            return None
        return self.accounts.get(auth.removeprefix("Bearer tok-"))

    async def token(self, request: Request) -> JSONResponse:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append(form)
        ok = (
            form.get("client_id") == CLIENT_ID
            and form.get("client_secret") == CLIENT_SECRET
            and form.get("code") in self.accounts
            and request.headers.get("accept") == "application/json"
        )
        if not ok:
            # GitHub's way: HTTP 200 with an error and no token.
            return JSONResponse(
                {"error": "bad_verification_code", "error_description": PROVIDER_SECRET_DETAIL}
            )
        return JSONResponse({"access_token": f"tok-{form['code']}", "token_type": "bearer"})

    async def user(self, request: Request) -> JSONResponse:
        if self.fail_user:
            return JSONResponse({"message": PROVIDER_SECRET_DETAIL}, status_code=500)
        account = self._account(request)
        if account is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse(account["user"])

    async def emails(self, request: Request) -> JSONResponse:
        account = self._account(request)
        if account is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse(account["emails"])

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/login/oauth/access_token", self.token, methods=["POST"]),
                Route("/api/user", self.user),
                Route("/api/user/emails", self.emails),
            ]
        )


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    with serving(fake.app()) as base:
        fake.base = base
        yield fake


@pytest.fixture
def github(fake_server: FakeGitHub) -> FakeGitHub:
    fake_server.reset()
    return fake_server


def github_settings(settings: Settings, github: FakeGitHub, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "github_client_id": CLIENT_ID,
            "github_client_secret": SecretStr(CLIENT_SECRET),
            "github_authorize_url": f"{github.base}/login/oauth/authorize",
            "github_token_url": f"{github.base}/login/oauth/access_token",
            "github_api_url": f"{github.base}/api",
            **extra,
        }
    )


@pytest.fixture
def oauth_app(settings: Settings, db: Database, github: FakeGitHub) -> FastAPI:
    return create_app(github_settings(settings, github), db=db)


@pytest.fixture
async def browser(oauth_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=oauth_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        yield c


def verified(email: str, *, primary: bool = True, ok: bool = True) -> dict[str, Any]:
    return {"email": email, "primary": primary, "verified": ok, "visibility": None}


def add_ada(github: FakeGitHub, code: str = "code-ada", **overrides: Any) -> None:
    fields: dict[str, Any] = {
        "github_id": 4242,
        "login": "ada-l",
        "name": "Ada Lovelace",
        "public_email": "ada@example.com",
        "emails": [verified("ada@example.com")],
    }
    fields.update(overrides)
    github.add(code, **fields)


async def start(browser: httpx.AsyncClient) -> str:
    """Start the flow; returns the state the provider would hand back."""
    resp = await browser.get("/v1/auth/oauth/github")
    assert resp.status_code == 302, resp.text
    return str(httpx.URL(resp.headers["location"]).params["state"])


async def login(browser: httpx.AsyncClient, code: str) -> httpx.Response:
    state = await start(browser)
    return await browser.get(
        "/v1/auth/oauth/github/callback", params={"code": code, "state": state}
    )


def landing(resp: httpx.Response, prefix: str = "") -> dict[str, str]:
    """The query of the redirect to the dashboard's callback page (none when signed in)."""
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    page = f"{prefix}/auth/github/callback"
    assert location == page or location.startswith(page + "?"), location
    assert PROVIDER_SECRET_DETAIL not in location
    assert resp.headers["cache-control"] == "no-store"
    return dict(httpx.URL(location).params)


async def signed_in(
    browser: httpx.AsyncClient, resp: httpx.Response, prefix: str = ""
) -> dict[str, str]:
    """A callback that signed the browser in: nothing in the redirect's address, the session in
    an HttpOnly cookie only its exchange route receives, handed over once by POST."""
    assert landing(resp, prefix) == {}
    cookie = next(
        c for c in resp.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")
    )
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert "Path=/v1/auth/oauth/github/session" in cookie and "Max-Age=60" in cookie
    answer = await browser.post("/v1/auth/oauth/github/session")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body: dict[str, str] = answer.json()
    assert set(body) == {"token", "user_id", "team_id", "email", "name"}
    # Read once: the answer cleared the cookie.
    again = await browser.post("/v1/auth/oauth/github/session")
    assert_error(again, 401, "unauthorized")
    return body


def assert_refused(resp: httpx.Response, code: str) -> None:
    assert landing(resp) == {"error": code}
