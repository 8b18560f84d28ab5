"""OAuth login with GitHub, against a fake GitHub served over real HTTP on 127.0.0.1
(`github_fake.py`)."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.api.routes.oauth import LINK_COOKIE, SESSION_COOKIE, STATE_COOKIE
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models import OAuthIdentity, Team, TeamMember, User
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.services import oauth
from wrenn_server.controlplane.settings import Settings

from ..ports import free_port
from .conftest import TEST_JWT_SECRET
from .github_fake import (
    CALLBACK_URI,
    CLIENT_ID,
    CLIENT_SECRET,
    FakeGitHub,
    add_ada,
    assert_refused,
    github_settings,
    login,
    signed_in,
    start,
    verified,
)
from .helpers import PASSWORD, assert_error, bearer, count, signup


async def test_unconfigured_provider_is_absent(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/auth/oauth")).json() == {"providers": []}
    assert_error(await client.get("/v1/auth/oauth/github"), 404, "not_found")
    callback = await client.get("/v1/auth/oauth/github/callback?code=x&state=y")
    assert_error(callback, 404, "not_found")


async def test_unknown_provider_is_absent(browser: httpx.AsyncClient) -> None:
    assert (await browser.get("/v1/auth/oauth")).json() == {"providers": ["github"]}
    assert_error(await browser.get("/v1/auth/oauth/gitlab"), 404, "not_found")
    assert_error(await browser.get("/v1/auth/oauth/gitlab/callback"), 404, "not_found")


async def test_half_configured_provider_is_absent(
    settings: Settings, db: Database, github: FakeGitHub
) -> None:
    app = create_app(github_settings(settings, github, github_client_secret=None), db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        assert (await c.get("/v1/auth/oauth")).json() == {"providers": []}
        assert_error(await c.get("/v1/auth/oauth/github"), 404, "not_found")


async def test_start_redirects_to_the_provider_with_a_state_cookie(
    browser: httpx.AsyncClient, github: FakeGitHub
) -> None:
    resp = await browser.get("/v1/auth/oauth/github")
    assert resp.status_code == 302
    url = httpx.URL(resp.headers["location"])
    assert str(url.copy_with(query=None)) == f"{github.base}/login/oauth/authorize"
    params = dict(url.params)
    assert set(params) == {"client_id", "redirect_uri", "scope", "state"}
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == CALLBACK_URI
    assert params["scope"] == "read:user user:email"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"{STATE_COOKIE}={params['state']};")
    assert "HttpOnly" in cookie and "Path=/v1/auth/oauth" in cookie
    assert "samesite=lax" in cookie.lower()
    assert CLIENT_SECRET not in resp.headers["location"]
    # Each flow gets its own unguessable state.
    assert await start(browser) != params["state"]


async def test_callback_creates_account_with_team_and_working_token(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    add_ada(github)
    resp = await login(browser, "code-ada")
    params = await signed_in(browser, resp)
    assert params["email"] == "ada@example.com"
    assert STATE_COOKIE not in browser.cookies
    # The server exchanged the code with its credentials and the same redirect URI.
    assert github.token_requests == [
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "code": "code-ada",
            "redirect_uri": CALLBACK_URI,
        }
    ]

    me = await browser.get("/v1/me", headers=bearer(params["token"]))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "user_id": params["user_id"],
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "has_password": False,
        "providers": ["github"],
        "team_id": params["team_id"],
        "role": "owner",
        "is_admin": True,
    }
    user_id = ids.USER.parse(params["user_id"])
    team_id = ids.TEAM.parse(params["team_id"])
    async with db.sessionmaker() as session, transaction(session):
        user = await session.get(User, user_id)
        assert user is not None and user.is_active and user.password_hash is None
        team = await session.get(Team, team_id)
        assert team is not None and team.name == "Ada Lovelace's Team"
        member = await session.get(TeamMember, (team_id, user_id))
        assert member is not None and member.role == "owner" and member.is_default
        identity = await session.scalar(select(OAuthIdentity))
        assert identity is not None
        assert (identity.provider, identity.provider_user_id) == ("github", "4242")
        assert identity.user_id == user_id


async def test_second_login_finds_the_same_account(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    add_ada(github, "first")
    # The same GitHub account later, with a changed name and login.
    add_ada(github, "second", login="ada2", name="Countess")
    first = await signed_in(browser, await login(browser, "first"))
    teams_before = await count(db, Team)
    second = await signed_in(browser, await login(browser, "second"))
    assert second["user_id"] == first["user_id"]
    assert second["team_id"] == first["team_id"]
    assert second["token"] != ""
    assert await count(db, User) == 1
    assert await count(db, Team) == teams_before
    assert await count(db, OAuthIdentity) == 1
    me = await browser.get("/v1/me", headers=bearer(second["token"]))
    assert me.status_code == 200 and me.json()["user_id"] == first["user_id"]


async def test_links_to_an_existing_account_whose_email_is_verified(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    admin = await signup(browser, email="root@example.com")
    # An account an admin added: its email counts as verified.
    added = await browser.post(
        "/v1/admin/users",
        json={"email": "ada@example.com", "name": "Ada", "password": PASSWORD},
        headers=bearer(admin["token"]),
    )
    assert added.status_code == 201, added.text
    assert added.json()["email_verified"] is True
    add_ada(github, public_email=None, emails=[verified("Ada@Example.COM")])
    params = await signed_in(browser, await login(browser, "code-ada"))
    assert params["user_id"] == added.json()["user_id"]
    assert await count(db, User) == 2
    me = (await browser.get("/v1/me", headers=bearer(params["token"]))).json()
    assert me["has_password"] is True and me["providers"] == ["github"]
    assert me["name"] == "Ada"
    # The password still works.
    password_login = await browser.post(
        "/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert password_login.status_code == 200


async def test_pre_registered_email_is_not_linked(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    """The attack: someone signs up with the victim's address and a password of theirs (never
    proving the address); when the victim signs in with GitHub, which vouches for that address,
    they must not land in (and so share) the attacker's account."""
    attacker = await signup(browser, email="victim@corp.example", name="Not The Victim")
    add_ada(
        github,
        login="victim",
        name="Victim",
        public_email="victim@corp.example",
        emails=[verified("victim@corp.example")],
    )
    # Refused: the account with that email stays the attacker's alone, nothing is linked.
    assert_refused(await login(browser, "code-ada"), "email_taken")
    assert SESSION_COOKIE not in browser.cookies
    assert await count(db, OAuthIdentity) == 0
    assert await count(db, User) == 1
    me = (await browser.get("/v1/me", headers=bearer(attacker["token"]))).json()
    assert me["providers"] == []
    async with db.sessionmaker() as session, transaction(session):
        user = await session.scalar(select(User))
        assert user is not None and user.email_verified_at is None


async def test_github_account_makes_a_verified_account(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    add_ada(github)
    await signed_in(browser, await login(browser, "code-ada"))
    async with db.sessionmaker() as session, transaction(session):
        user = await session.scalar(select(User))
        assert user is not None and user.email_verified_at is not None


async def test_deleted_account_with_the_email_is_not_linked(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    existing = await signup(browser, email="ada@example.com")
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(User)
            .where(User.id == ids.USER.parse(existing["user_id"]))
            .values(deleted_at=User.created_at)
        )
    add_ada(github)
    assert_refused(await login(browser, "code-ada"), "email_taken")
    assert await count(db, OAuthIdentity) == 0


async def test_private_email_is_read_from_user_emails(
    browser: httpx.AsyncClient, github: FakeGitHub
) -> None:
    add_ada(
        github,
        public_email=None,
        name=None,
        emails=[
            verified("old@example.com", primary=False),
            verified("Private@Example.com"),
            verified("unverified@example.com", primary=False, ok=False),
        ],
    )
    params = await signed_in(browser, await login(browser, "code-ada"))
    assert params["email"] == "private@example.com"
    me = (await browser.get("/v1/me", headers=bearer(params["token"]))).json()
    # No display name on GitHub: the login stands in.
    assert me["email"] == "private@example.com" and me["name"] == "ada-l"


async def test_unverified_primary_email_is_refused(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    existing = await signup(browser, email="victim@example.com")
    add_ada(
        github,
        public_email="victim@example.com",
        emails=[
            verified("victim@example.com", ok=False),
            verified("other@example.com", primary=False),
        ],
    )
    assert_refused(await login(browser, "code-ada"), "exchange_failed")
    assert await count(db, User) == 1
    assert await count(db, OAuthIdentity) == 0
    me = (await browser.get("/v1/me", headers=bearer(existing["token"]))).json()
    assert me["providers"] == []


@pytest.mark.parametrize("case", ["no_cookie", "no_state", "tampered", "other_flow", "expired"])
async def test_bad_state_is_refused(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database, case: str
) -> None:
    add_ada(github)
    state = await start(browser)
    params: dict[str, str] = {"code": "code-ada", "state": state}
    if case == "no_cookie":
        browser.cookies.clear()
    elif case == "no_state":
        del params["state"]
    elif case == "tampered":
        nonce, expires, mac = state.split(".")
        forged = f"{nonce}.{int(expires) + 3600}.{mac}"
        browser.cookies.set(STATE_COOKIE, forged, domain="wrenn.test", path="/v1/auth/oauth")
        params["state"] = forged
    elif case == "other_flow":
        # A validly signed state, but not the one in this browser's cookie.
        params["state"] = oauth.new_state(TEST_JWT_SECRET, "github", ttl_sec=600)
    elif case == "expired":
        old = oauth.new_state(TEST_JWT_SECRET, "github", ttl_sec=600, now=time.time() - 601)
        browser.cookies.clear()
        browser.cookies.set(STATE_COOKIE, old, domain="wrenn.test", path="/v1/auth/oauth")
        params["state"] = old
    resp = await browser.get("/v1/auth/oauth/github/callback", params=params)
    assert_refused(resp, "invalid_state")
    assert github.token_requests == []
    assert await count(db, User) == 0


def test_state_checks() -> None:
    state = oauth.new_state(TEST_JWT_SECRET, "github", ttl_sec=60)
    oauth.verify_state(TEST_JWT_SECRET, "github", state=state, cookie=state)
    with pytest.raises(oauth.OAuthError):
        oauth.verify_state("another-secret-" + "y" * 40, "github", state=state, cookie=state)
    with pytest.raises(oauth.OAuthError):
        oauth.verify_state(TEST_JWT_SECRET, "gitlab", state=state, cookie=state)
    with pytest.raises(oauth.OAuthError):
        oauth.verify_state(
            TEST_JWT_SECRET, "github", state=state, cookie=state, now=time.time() + 61
        )


async def test_provider_token_error_is_refused_cleanly(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    add_ada(github)
    assert_refused(await login(browser, "not-a-code"), "exchange_failed")
    assert len(github.token_requests) == 1
    assert await count(db, User) == 0


async def test_provider_api_error_is_refused_cleanly(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    add_ada(github)
    github.fail_user = True
    assert_refused(await login(browser, "code-ada"), "exchange_failed")
    assert await count(db, User) == 0


async def test_unreachable_provider_is_refused_cleanly(
    settings: Settings, db: Database, github: FakeGitHub
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app = create_app(github_settings(settings, github, github_token_url=dead), db=db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        add_ada(github)
        assert_refused(await login(c, "code-ada"), "exchange_failed")
    assert await count(db, User) == 0


async def test_denied_authorization_and_missing_code(
    browser: httpx.AsyncClient, github: FakeGitHub
) -> None:
    state = await start(browser)
    denied = await browser.get(
        "/v1/auth/oauth/github/callback",
        params={"error": "access_denied", "error_description": "nope", "state": state},
    )
    assert_refused(denied, "access_denied")
    state = await start(browser)
    missing = await browser.get("/v1/auth/oauth/github/callback", params={"state": state})
    assert_refused(missing, "missing_code")
    assert github.token_requests == []


async def test_configured_urls_are_used(
    settings: Settings, db: Database, github: FakeGitHub
) -> None:
    configured = github_settings(
        settings,
        github,
        oauth_callback_base_url="https://api.wrenn.test/",
        oauth_redirect_url="https://wrenn.test/app/",
    )
    app = create_app(configured, db=db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://wrenn.test") as c:
        add_ada(github)
        start_resp = await c.get("/v1/auth/oauth/github")
        location = httpx.URL(start_resp.headers["location"])
        expected_uri = "https://api.wrenn.test/v1/auth/oauth/github/callback"
        assert location.params["redirect_uri"] == expected_uri
        assert "Secure" in start_resp.headers["set-cookie"]
        resp = await c.get(
            "/v1/auth/oauth/github/callback",
            params={"code": "code-ada", "state": location.params["state"]},
        )
        params = await signed_in(c, resp, prefix="https://wrenn.test/app")
        assert params["email"] == "ada@example.com"
        assert github.token_requests[0]["redirect_uri"] == expected_uri


async def connect(browser: httpx.AsyncClient, token: str) -> str:
    """Start a connect flow as the token's user; returns the state."""
    resp = await browser.get("/v1/me/providers/github/connect", headers=bearer(token))
    assert resp.status_code == 200, resp.text
    url = httpx.URL(resp.json()["auth_url"])
    assert dict(url.params)["client_id"] == CLIENT_ID
    return str(url.params["state"])


async def callback(browser: httpx.AsyncClient, code: str, state: str) -> httpx.Response:
    return await browser.get(
        "/v1/auth/oauth/github/callback", params={"code": code, "state": state}
    )


async def test_connect_links_the_provider_to_the_signed_in_account(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    me_before = await signup(browser, email="someone@example.com")
    # A GitHub account whose email differs from the account's: connecting links it anyway.
    add_ada(github)
    state = await connect(browser, me_before["token"])
    params = await signed_in(browser, await callback(browser, "code-ada", state))
    assert params["user_id"] == me_before["user_id"]
    assert params["email"] == "someone@example.com"
    assert LINK_COOKIE not in browser.cookies
    me = (await browser.get("/v1/me", headers=bearer(params["token"]))).json()
    assert me["providers"] == ["github"]
    assert await count(db, User) == 1
    # Logging in with GitHub now lands in the same account.
    again = await signed_in(browser, await login(browser, "code-ada"))
    assert again["user_id"] == me_before["user_id"]


async def test_connect_refuses_a_provider_account_linked_elsewhere(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    add_ada(github)
    owner = await signed_in(browser, await login(browser, "code-ada"))
    other = await signup(browser, email="other@example.com")
    state = await connect(browser, other["token"])
    assert_refused(await callback(browser, "code-ada", state), "access_denied")
    async with db.sessionmaker() as session, transaction(session):
        identity = await session.scalar(select(OAuthIdentity))
        assert identity is not None
        assert identity.user_id == ids.USER.parse(owner["user_id"])


async def test_swapped_link_cookie_is_refused(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    attacker = await signup(browser, email="attacker@example.com")
    victim = await signup(browser, email="victim@example.com")
    add_ada(github)
    state = await connect(browser, attacker["token"])
    browser.cookies.set(LINK_COOKIE, victim["user_id"], domain="wrenn.test", path="/v1/auth/oauth")
    assert_refused(await callback(browser, "code-ada", state), "invalid_state")
    assert await count(db, OAuthIdentity) == 0


async def test_login_after_an_abandoned_connect_is_a_login(
    browser: httpx.AsyncClient, github: FakeGitHub, db: Database
) -> None:
    someone = await signup(browser, email="someone@example.com")
    await connect(browser, someone["token"])
    assert LINK_COOKIE in browser.cookies
    add_ada(github)
    params = await signed_in(browser, await login(browser, "code-ada"))
    assert params["user_id"] != someone["user_id"]
    assert params["email"] == "ada@example.com"
    assert await count(db, User) == 2


async def test_connect_needs_a_session_and_a_configured_provider(
    browser: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    assert_error(await browser.get("/v1/me/providers/github/connect"), 401, "unauthorized")
    token = (await signup(client))["token"]
    unconfigured = await client.get("/v1/me/providers/github/connect", headers=bearer(token))
    assert_error(unconfigured, 404, "not_found")


async def test_disconnect_provider(browser: httpx.AsyncClient, github: FakeGitHub) -> None:
    # OAuth-only account: GitHub is its only way in.
    add_ada(github)
    oauth_only = await signed_in(browser, await login(browser, "code-ada"))
    resp = await browser.delete("/v1/me/providers/github", headers=bearer(oauth_only["token"]))
    assert_error(resp, 400, "invalid_request")
    # A password account with GitHub linked may drop it, once.
    add_ada(github, "code-bob", github_id=7, login="bob", emails=[verified("bob@example.com")])
    bob = await signup(browser, email="bob@example.com")
    await signed_in(
        browser, await callback(browser, "code-bob", await connect(browser, bob["token"]))
    )
    resp = await browser.delete("/v1/me/providers/github", headers=bearer(bob["token"]))
    assert resp.status_code == 204, resp.text
    me = (await browser.get("/v1/me", headers=bearer(bob["token"]))).json()
    assert me["providers"] == []
    resp = await browser.delete("/v1/me/providers/github", headers=bearer(bob["token"]))
    assert_error(resp, 404, "not_found")
