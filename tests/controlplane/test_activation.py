"""Open signup with email verification (`signup_verify_email`): the account waits inactive until
the link mailed by a real SMTP server on this machine (aiosmtpd) is followed; the link works
once and expires, a new one can be asked for, and a second signup for a waiting email."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models import TeamMember, User, UserToken
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.settings import Settings

from ..mailserver import Mail, MailServer, mail_server
from .helpers import PASSWORD, assert_error, bearer, signup

PUBLIC_URL = "https://wrenn.example"


@pytest.fixture(scope="module")
def smtp() -> Iterator[MailServer]:
    with mail_server() as server:
        yield server


@pytest.fixture
def mail(smtp: MailServer) -> MailServer:
    smtp.clear()
    return smtp


def _verifying(settings: Settings, mail: MailServer, **extra: object) -> Settings:
    return settings.model_copy(
        update={
            **mail.settings(),
            "public_url": PUBLIC_URL,
            "signup": "open",
            "signup_verify_email": True,
            **extra,
        }
    )


@pytest.fixture
async def api(
    settings: Settings, mail: MailServer, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_verifying(settings, mail), db=db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        yield c


def activation_token(message: Mail) -> str:
    """The token of the activation link in a mail: `<public url>/activate#token=...`."""
    url = urlsplit(message.link(r"/activate#"))
    assert f"{url.scheme}://{url.netloc}" == PUBLIC_URL
    return parse_qs(url.fragment)["token"][0]


async def register(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/v1/auth/signup", json={"email": email, "password": password, "name": "Ada"}
    )


async def password_login(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"email": email, "password": password})


async def activate(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/v1/auth/activate", json={"token": token})


async def resend(client: httpx.AsyncClient, email: str) -> None:
    resp = await client.post("/v1/auth/activate/resend", json={"email": email})
    assert resp.status_code == 204, resp.text
    assert resp.content == b""


async def test_signup_waits_for_the_mailed_link(
    api: httpx.AsyncClient, mail: MailServer, db: Database
) -> None:
    options = (await api.get("/v1/auth/options")).json()
    assert options["email_verification"] is True
    resp = await register(api, "Ada@Example.com")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["activation_required"] is True
    assert body["token"] == "" and body["team_id"] == ""
    assert body["email"] == "ada@example.com"
    # No account to sign in to yet: the right password says why, a wrong one says nothing.
    assert_error(await password_login(api, "ada@example.com"), 403, "account_not_activated")
    assert_error(
        await password_login(api, "ada@example.com", "wrong password"), 401, "unauthorized"
    )
    user_id = ids.USER.parse(body["user_id"])
    async with db.sessionmaker() as session, transaction(session):
        assert not (
            await session.scalars(select(TeamMember).where(TeamMember.user_id == user_id))
        ).all()

    message = await mail.wait_for("ada@example.com")
    assert message.message["Subject"] == "Activate your Wrenn account"
    token = activation_token(message)
    async with db.sessionmaker() as session, transaction(session):
        stored = (await session.scalars(select(UserToken.token_hash))).all()
    assert len(stored) == 1 and token not in stored[0]

    resp = await activate(api, token)
    assert resp.status_code == 200, resp.text
    session_body = resp.json()
    assert session_body["user_id"] == body["user_id"] and session_body["team_id"]
    me = await api.get("/v1/me", headers=bearer(session_body["token"]))
    assert me.status_code == 200 and me.json()["role"] == "owner"
    assert (await password_login(api, "ada@example.com")).json()["team_id"] == session_body[
        "team_id"
    ]
    async with db.sessionmaker() as session, transaction(session):
        user = await session.get(User, user_id)
        assert user is not None and user.is_active and user.email_verified_at is not None

    # The link works once.
    assert_error(await activate(api, token), 400, "invalid_token")
    assert_error(await activate(api, "x" * 43), 400, "invalid_token")
    # The address is taken now, and there is nothing to resend.
    assert_error(await register(api, "ada@example.com"), 409, "email_taken")
    await resend(api, "ada@example.com")


async def test_an_expired_link_is_refused_and_a_new_one_works(
    api: httpx.AsyncClient, mail: MailServer, db: Database
) -> None:
    assert (await register(api, "ada@example.com")).status_code == 201
    first = activation_token(await mail.wait_for("ada@example.com"))
    async with db.sessionmaker() as session, transaction(session, write=True):
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
        await session.execute(update(UserToken).values(expires_at=past, created_at=past))
    assert_error(await activate(api, first), 400, "invalid_token")
    assert_error(await password_login(api, "ada@example.com"), 403, "account_not_activated")

    await resend(api, "ADA@example.com ")
    second = activation_token(await mail.wait_for("ada@example.com", count=2))
    assert second != first
    assert (await activate(api, second)).status_code == 200
    assert (await password_login(api, "ada@example.com")).status_code == 200


async def test_resend_replaces_older_links_and_tells_nothing(
    api: httpx.AsyncClient, mail: MailServer, db: Database
) -> None:
    assert (await register(api, "ada@example.com")).status_code == 201
    first = activation_token(await mail.wait_for("ada@example.com"))
    # At most one mail a minute.
    await resend(api, "ada@example.com")
    await resend(api, "nobody@example.com")
    await resend(api, "not an email")
    async with db.sessionmaker() as session, transaction(session, write=True):
        earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
        await session.execute(update(UserToken).values(created_at=earlier))
    await resend(api, "ada@example.com")
    second = activation_token(await mail.wait_for("ada@example.com", count=2))
    assert len(mail.to("ada@example.com")) == 2
    assert mail.to("nobody@example.com") == []
    assert_error(await activate(api, first), 400, "invalid_token")
    assert (await activate(api, second)).status_code == 200


async def test_a_second_signup_for_a_waiting_email(
    api: httpx.AsyncClient, mail: MailServer, db: Database
) -> None:
    """Someone signed up with Ada's address: while their link is valid Ada is told to wait;
    after it expired her signup replaces theirs, and only her password works."""
    assert (await register(api, "ada@example.com", "the squatter's password")).status_code == 201
    squatters = activation_token(await mail.wait_for("ada@example.com"))
    assert_error(await register(api, "ada@example.com"), 409, "signup_cooldown")
    async with db.sessionmaker() as session, transaction(session, write=True):
        past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        await session.execute(update(User).values(updated_at=past, created_at=past))
        await session.execute(update(UserToken).values(created_at=past, expires_at=past))
    resp = await register(api, "ada@example.com")
    assert resp.status_code == 201, resp.text
    adas = activation_token(await mail.wait_for("ada@example.com", count=2))
    assert_error(await activate(api, squatters), 400, "invalid_token")
    assert (await activate(api, adas)).status_code == 200
    assert_error(
        await password_login(api, "ada@example.com", "the squatter's password"), 401, "unauthorized"
    )
    assert (await password_login(api, "ada@example.com")).status_code == 200


async def test_without_verification_signup_is_active_at_once(
    settings: Settings, mail: MailServer, db: Database
) -> None:
    """Without verification, signup is as before: active at once, nothing mailed."""
    app = create_app(
        settings.model_copy(update={**mail.settings(), "public_url": PUBLIC_URL}), db=db
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as client:
        body = await signup(client, email="ada@example.com")
        assert body["activation_required"] is False and body["token"]
        assert (await client.get("/v1/auth/options")).json()["email_verification"] is False
        resp = await client.post("/v1/auth/activate/resend", json={"email": "ada@example.com"})
        assert_error(resp, 503, "service_unavailable")
    assert mail.to("ada@example.com") == []


def test_verification_needs_a_mail_server(settings: Settings) -> None:
    with pytest.raises(ValueError, match="WRENN_SIGNUP_VERIFY_EMAIL"):
        Settings(**{**settings.model_dump(), "signup_verify_email": True})
