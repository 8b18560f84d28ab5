"""Changing a password, and resetting it through a link mailed by a real SMTP server on this
machine (aiosmtpd): what each revokes, and the attacks on them (old sessions, token reuse,
expiry, enumeration, an email pre-registered by someone else)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models import APIKey, OAuthIdentity, User, UserToken
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.settings import Settings

from ..mailserver import Mail, MailServer, mail_server
from .github_fake import FakeGitHub, add_ada, github_settings, login, signed_in, verified
from .helpers import PASSWORD, assert_error, bearer, count, signup

NEW_PASSWORD = "a brand new passphrase"
PUBLIC_URL = "https://wrenn.example"


@pytest.fixture(scope="module")
def smtp() -> Iterator[MailServer]:
    with mail_server() as server:
        yield server


@pytest.fixture
def mail(smtp: MailServer) -> MailServer:
    smtp.clear()
    return smtp


@pytest.fixture
def mail_settings(settings: Settings, mail: MailServer) -> Settings:
    return settings.model_copy(update={**mail.settings(), "public_url": PUBLIC_URL})


@pytest.fixture
async def api(mail_settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(mail_settings, db=db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        yield c


async def password_login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"email": email, "password": password})


def reset_token(message: Mail) -> str:
    """The token of the reset link in a mail: `<public url>/reset-password#token=...`."""
    url = urlsplit(message.link(r"/reset-password#"))
    assert f"{url.scheme}://{url.netloc}" == PUBLIC_URL
    return parse_qs(url.fragment)["token"][0]


async def request_reset(client: httpx.AsyncClient, email: str) -> None:
    resp = await client.post("/v1/me/password/reset", json={"email": email})
    assert resp.status_code == 204, resp.text
    assert resp.content == b""


async def confirm(client: httpx.AsyncClient, token: str, password: str) -> httpx.Response:
    return await client.post(
        "/v1/me/password/reset/confirm", json={"token": token, "new_password": password}
    )


# --- POST /v1/me/password ----------------------------------------------------------------------


async def test_change_password_revokes_every_session(client: httpx.AsyncClient) -> None:
    ada = await signup(client, email="ada@example.com")
    other_device = (await password_login(client, "ada@example.com", PASSWORD)).json()["token"]
    resp = await client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(ada["token"]),
    )
    assert resp.status_code == 204, resp.text
    # Both sessions that existed are over, the one that asked included.
    for token in (ada["token"], other_device):
        assert_error(await client.get("/v1/me", headers=bearer(token)), 401, "unauthorized")
    assert_error(await password_login(client, "ada@example.com", PASSWORD), 401, "unauthorized")
    fresh = await password_login(client, "ada@example.com", NEW_PASSWORD)
    assert fresh.status_code == 200
    me = await client.get("/v1/me", headers=bearer(fresh.json()["token"]))
    assert me.status_code == 200


async def test_change_password_needs_the_current_one(client: httpx.AsyncClient) -> None:
    ada = await signup(client, email="ada@example.com")
    wrong = await client.post(
        "/v1/me/password",
        json={"current_password": "not the password", "new_password": NEW_PASSWORD},
        headers=bearer(ada["token"]),
    )
    assert_error(wrong, 401, "wrong_password")
    missing = await client.post(
        "/v1/me/password", json={"new_password": NEW_PASSWORD}, headers=bearer(ada["token"])
    )
    assert_error(missing, 400, "invalid_request")
    short = await client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=bearer(ada["token"]),
    )
    assert_error(short, 400, "invalid_request")
    # Nothing changed: the session and the password still work.
    assert (await client.get("/v1/me", headers=bearer(ada["token"]))).status_code == 200
    assert (await password_login(client, "ada@example.com", PASSWORD)).status_code == 200


@pytest.fixture
async def slow_lock_client(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a first sign-in lock of a minute: nothing here runs out while a test runs."""
    app = create_app(settings.model_copy(update={"login_lockout_first_sec": 60.0}), db=db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        yield c


async def test_guessing_the_current_password_is_throttled(
    slow_lock_client: httpx.AsyncClient,
) -> None:
    """A stolen session must not become an unthrottled password oracle."""
    client = slow_lock_client
    ada = await signup(client, email="ada@example.com")
    statuses = []
    for attempt in range(8):
        resp = await client.post(
            "/v1/me/password",
            json={"current_password": f"guess {attempt}", "new_password": NEW_PASSWORD},
            headers=bearer(ada["token"]),
        )
        statuses.append(resp.status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * 3
    # The account's sign-in is throttled too.
    assert (await password_login(client, "ada@example.com", PASSWORD)).status_code == 429


async def test_oauth_only_account_adds_a_password(
    browser: httpx.AsyncClient, github: FakeGitHub
) -> None:
    add_ada(github)
    ada = await signed_in(browser, await login(browser, "code-ada"))
    mismatch = await browser.post(
        "/v1/me/password",
        json={"new_password": NEW_PASSWORD, "confirm_password": "something else"},
        headers=bearer(ada["token"]),
    )
    assert_error(mismatch, 400, "invalid_request")
    added = await browser.post(
        "/v1/me/password",
        json={"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
        headers=bearer(ada["token"]),
    )
    assert added.status_code == 204, added.text
    assert_error(await browser.get("/v1/me", headers=bearer(ada["token"])), 401, "unauthorized")
    fresh = await password_login(browser, "ada@example.com", NEW_PASSWORD)
    assert fresh.status_code == 200
    me = (await browser.get("/v1/me", headers=bearer(fresh.json()["token"]))).json()
    assert me["has_password"] is True and me["providers"] == ["github"]


# --- Reset by mail -------------------------------------------------------------------------------


async def test_reset_by_mail(api: httpx.AsyncClient, mail: MailServer, db: Database) -> None:
    ada = await signup(api, email="ada@example.com")
    await request_reset(api, "ADA@example.com ")
    message = await mail.wait_for("ada@example.com")
    assert message.message["Subject"] == "Reset your Wrenn password"
    assert message.sender == "wrenn@mail.test"
    token = reset_token(message)
    # Only a hash of the token is stored.
    async with db.sessionmaker() as session, transaction(session):
        stored = (await session.scalars(select(UserToken.token_hash))).all()
    assert len(stored) == 1 and token not in stored[0]

    resp = await confirm(api, token, NEW_PASSWORD)
    assert resp.status_code == 204, resp.text
    assert_error(await api.get("/v1/me", headers=bearer(ada["token"])), 401, "unauthorized")
    assert_error(await password_login(api, "ada@example.com", PASSWORD), 401, "unauthorized")
    assert (await password_login(api, "ada@example.com", NEW_PASSWORD)).status_code == 200
    # The link proved the address.
    async with db.sessionmaker() as session, transaction(session):
        user = await session.scalar(select(User))
        assert user is not None and user.email_verified_at is not None


async def test_reset_token_works_once(api: httpx.AsyncClient, mail: MailServer) -> None:
    await signup(api, email="ada@example.com")
    await request_reset(api, "ada@example.com")
    token = reset_token(await mail.wait_for("ada@example.com"))
    assert (await confirm(api, token, NEW_PASSWORD)).status_code == 204
    reused = await confirm(api, token, "the attacker's choice")
    assert_error(reused, 400, "invalid_token")
    assert (await password_login(api, "ada@example.com", NEW_PASSWORD)).status_code == 200
    assert_error(await confirm(api, "x" * 43, NEW_PASSWORD), 400, "invalid_token")


async def test_expired_reset_token_is_refused(
    api: httpx.AsyncClient, mail: MailServer, db: Database
) -> None:
    await signup(api, email="ada@example.com")
    await request_reset(api, "ada@example.com")
    token = reset_token(await mail.wait_for("ada@example.com"))
    async with db.sessionmaker() as session, transaction(session, write=True):
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await session.execute(update(UserToken).values(expires_at=past))
    assert_error(await confirm(api, token, NEW_PASSWORD), 400, "invalid_token")
    assert (await password_login(api, "ada@example.com", PASSWORD)).status_code == 200


async def test_a_newer_reset_leaves_older_links_useless(
    api: httpx.AsyncClient, mail: MailServer, db: Database
) -> None:
    await signup(api, email="ada@example.com")
    await request_reset(api, "ada@example.com")
    first = reset_token(await mail.wait_for("ada@example.com"))
    # The minute between two mails has passed.
    async with db.sessionmaker() as session, transaction(session, write=True):
        earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
        await session.execute(update(UserToken).values(created_at=earlier))
    await request_reset(api, "ada@example.com")
    second = reset_token(await mail.wait_for("ada@example.com", count=2))
    assert second != first
    assert (await confirm(api, second, NEW_PASSWORD)).status_code == 204
    assert_error(await confirm(api, first, "the attacker's choice"), 400, "invalid_token")


async def test_reset_does_not_tell_which_emails_exist(
    api: httpx.AsyncClient, mail: MailServer, db: Database
) -> None:
    await signup(api, email="ada@example.com")
    unknown = await api.post("/v1/me/password/reset", json={"email": "nobody@example.com"})
    known = await api.post("/v1/me/password/reset", json={"email": "ada@example.com"})
    malformed = await api.post("/v1/me/password/reset", json={"email": "not an email"})
    assert unknown.status_code == known.status_code == malformed.status_code == 204
    assert unknown.headers.get("content-length") == known.headers.get("content-length")
    await mail.wait_for("ada@example.com")
    # The unknown address's request came first and is done: it sent nothing.
    assert mail.to("nobody@example.com") == []
    assert await count(db, UserToken) == 1


async def test_reset_mails_at_most_once_a_minute(api: httpx.AsyncClient, mail: MailServer) -> None:
    await signup(api, email="ada@example.com")
    for _ in range(3):
        await request_reset(api, "ada@example.com")
    await mail.wait_for("ada@example.com")
    assert len(mail.to("ada@example.com")) == 1


async def test_deactivated_account_gets_no_reset(
    api: httpx.AsyncClient, mail: MailServer, db: Database
) -> None:
    await signup(api, email="root@example.com")
    await signup(api, email="ada@example.com")
    await request_reset(api, "ada@example.com")
    token = reset_token(await mail.wait_for("ada@example.com"))
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(User).where(User.email == "ada@example.com").values(is_active=False)
        )
    assert_error(await confirm(api, token, NEW_PASSWORD), 400, "invalid_token")


async def test_reset_without_a_mail_server_is_unavailable(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/me/password/reset", json={"email": "ada@example.com"})
    assert_error(resp, 503, "service_unavailable")
    options = (await client.get("/v1/auth/options")).json()
    assert options == {"signup": "open", "password_reset": False, "email_verification": False}


async def test_smtp_needs_a_sender_and_a_public_url(settings: Settings) -> None:
    with pytest.raises(ValueError, match="WRENN_PUBLIC_URL"):
        Settings(**{**settings.model_dump(), "smtp_host": "127.0.0.1", "smtp_from": "a@b.test"})


# --- The pre-registration attack, to the end -----------------------------------------------------


@pytest.fixture
async def victim_browser(
    mail_settings: Settings, db: Database, github: FakeGitHub
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(github_settings(mail_settings, github), db=db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        yield c


async def test_the_owner_of_a_pre_registered_email_takes_it_back(
    victim_browser: httpx.AsyncClient, github: FakeGitHub, mail: MailServer, db: Database
) -> None:
    """Someone signs up with the victim's address, makes an API key and links their own
    GitHub account. The victim, refused by GitHub sign-in (the email is not verified), resets
    the password through the mailed link: the attacker's session, key and GitHub link all end,
    and the victim's GitHub sign-in then lands in the account."""
    client = victim_browser
    attacker = await signup(client, email="victim@corp.example", name="Not The Victim")
    key = await client.post(
        "/v1/api-keys", json={"name": "backdoor"}, headers=bearer(attacker["token"])
    )
    assert key.status_code == 201, key.text
    attacker_key = {"X-API-Key": key.json()["key"]}
    add_ada(github, "attacker-gh", github_id=666, login="mallory", emails=[verified("m@evil.test")])
    connect = await client.get("/v1/me/providers/github/connect", headers=bearer(attacker["token"]))
    state = httpx.URL(connect.json()["auth_url"]).params["state"]
    linked = await client.get(
        "/v1/auth/oauth/github/callback", params={"code": "attacker-gh", "state": state}
    )
    await signed_in(client, linked)
    assert (await client.get("/v1/capsules", headers=attacker_key)).status_code == 200

    add_ada(
        github,
        "victim-gh",
        github_id=4242,
        login="victim",
        emails=[verified("victim@corp.example")],
    )
    refused = await login(client, "victim-gh")
    assert httpx.URL(refused.headers["location"]).params["error"] == "email_taken"

    await request_reset(client, "victim@corp.example")
    token = reset_token(await mail.wait_for("victim@corp.example"))
    assert (await confirm(client, token, NEW_PASSWORD)).status_code == 204

    # The attacker holds nothing any more.
    assert_error(await client.get("/v1/me", headers=bearer(attacker["token"])), 401, "unauthorized")
    assert_error(await client.get("/v1/capsules", headers=attacker_key), 401, "unauthorized")
    assert_error(await password_login(client, "victim@corp.example", PASSWORD), 401, "unauthorized")
    assert await count(db, OAuthIdentity) == 0
    # The attacker's GitHub account now signs in to an account of its own (signup is open).
    mallory = await signed_in(client, await login(client, "attacker-gh"))
    assert mallory["user_id"] != attacker["user_id"] and mallory["email"] == "m@evil.test"
    async with db.sessionmaker() as session, transaction(session):
        revoked = await session.scalar(select(APIKey))
        assert revoked is not None and revoked.revoked_at is not None

    # The victim's GitHub now signs in to the account, now theirs.
    victim = await signed_in(client, await login(client, "victim-gh"))
    assert victim["user_id"] == attacker["user_id"]
    assert ids.USER.parse(victim["user_id"])
    me = (await client.get("/v1/me", headers=bearer(victim["token"]))).json()
    assert me["providers"] == ["github"]


async def test_a_change_and_a_reset_are_told_to_the_account_by_mail(
    api: httpx.AsyncClient, mail: MailServer
) -> None:
    ada = await signup(api, email="ada@example.com")
    resp = await api.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(ada["token"]),
    )
    assert resp.status_code == 204, resp.text
    notice = await mail.wait_for("ada@example.com")
    assert notice.message["Subject"] == "Your Wrenn password was changed"
    await request_reset(api, "ada@example.com")
    token = reset_token(await mail.wait_for("ada@example.com", count=2))
    assert (await confirm(api, token, "yet another passphrase")).status_code == 204
    notice = await mail.wait_for("ada@example.com", count=3)
    assert notice.message["Subject"] == "Your Wrenn password was reset"
    assert "every session" in notice.body and "http" not in notice.body
