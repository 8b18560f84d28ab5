"""Who may create an account: the `signup` setting (open, invite, closed), invitations, accounts
added by admins, and the same rules for a new user arriving through GitHub. Refusals must not
tell which emails have accounts."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models import AuditLog, Invitation, User
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.settings import Settings

from ..mailserver import mail_server
from .github_fake import FakeGitHub, add_ada, github_settings, login, signed_in
from .helpers import PASSWORD, assert_error, bearer, count

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def api(settings: Settings, db: Database) -> Client:
    """`api(signup=..., **settings)`: a client of an app with those settings."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings.model_copy(update=overrides), db=db)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
            yield c

    return make


def body(email: str, **extra: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "name": "Someone", **extra}


async def make_admin(client: httpx.AsyncClient) -> dict[str, str]:
    """The first account (a platform admin), signed up while signup is open."""
    resp = await client.post("/v1/auth/signup", json=body("root@example.com"))
    assert resp.status_code == 201, resp.text
    data: dict[str, str] = resp.json()
    return data


async def invite(client: httpx.AsyncClient, admin: dict[str, str], email: str) -> dict[str, Any]:
    resp = await client.post(
        "/v1/admin/invitations", json={"email": email}, headers=bearer(admin["token"])
    )
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_signup_is_closed_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WRENN_SIGNUP", raising=False)
    assert Settings().signup == "closed"


async def test_closed_signup_refuses_everyone_alike(api: Client) -> None:
    async with api(signup="open") as opened:
        admin = await make_admin(opened)
    async with api(signup="closed") as closed:
        known = await closed.post("/v1/auth/signup", json=body("root@example.com"))
        unknown = await closed.post("/v1/auth/signup", json=body("new@example.com"))
        for resp in (known, unknown):
            assert_error(resp, 403, "forbidden")
        assert known.json() == unknown.json()
        assert (await closed.get("/v1/auth/options")).json()["signup"] == "closed"
        # Admins add people.
        added = await closed.post(
            "/v1/admin/users",
            json={"email": "New@Example.com", "name": "New Person"},
            headers=bearer(admin["token"]),
        )
        assert added.status_code == 201, added.text
        created = added.json()
        assert created["email"] == "new@example.com" and created["email_verified"] is True
        assert created["is_admin"] is False and created["is_active"] is True
        assert len(created["password"]) >= 16
        signin = await closed.post(
            "/v1/auth/login",
            json={"email": "new@example.com", "password": created["password"]},
        )
        assert signin.status_code == 200, signin.text
        assert signin.json()["team_id"].startswith("team-")
        # The admin chose a password: none comes back.
        chosen = await closed.post(
            "/v1/admin/users",
            json={"email": "b@example.com", "name": "B", "password": PASSWORD, "is_admin": True},
            headers=bearer(admin["token"]),
        )
        assert chosen.status_code == 201 and chosen.json()["password"] is None
        assert chosen.json()["is_admin"] is True
        # Admins may know which emails are taken.
        again = await closed.post(
            "/v1/admin/users",
            json={"email": "new@example.com", "name": "Again"},
            headers=bearer(admin["token"]),
        )
        assert_error(again, 409, "email_taken")
        # Only admins.
        member = await closed.post(
            "/v1/admin/users",
            json={"email": "c@example.com", "name": "C"},
            headers=bearer(signin.json()["token"]),
        )
        assert_error(member, 403, "forbidden")


async def test_invite_signup_needs_an_invitation_for_that_email(api: Client, db: Database) -> None:
    async with api(signup="open") as opened:
        admin = await make_admin(opened)
    async with api(signup="invite") as invited:
        for resp in (
            await invited.post("/v1/auth/signup", json=body("ada@example.com")),
            await invited.post("/v1/auth/signup", json=body("root@example.com")),
        ):
            assert_error(resp, 403, "forbidden")
        invitation = await invite(invited, admin, "Ada@Example.com")
        assert invitation["email"] == "ada@example.com" and invitation["mailed"] is False
        assert invitation["id"].startswith("inv-")
        url = urlsplit(invitation["url"])
        assert url.path == "/signup"
        assert parse_qs(url.fragment) == {
            "invitation": [invitation["token"]],
            "email": ["ada@example.com"],
        }
        token = invitation["token"]
        # Someone else with the link: refused like any bad token.
        other = await invited.post(
            "/v1/auth/signup", json=body("eve@example.com", invitation=token)
        )
        bogus = await invited.post(
            "/v1/auth/signup", json=body("ada@example.com", invitation="x" * 43)
        )
        assert_error(other, 403, "forbidden")
        assert other.json() == bogus.json()
        listed = await invited.get("/v1/admin/invitations", headers=bearer(admin["token"]))
        assert [i["email"] for i in listed.json()] == ["ada@example.com"]
        assert "token" not in listed.json()[0]

        ok = await invited.post("/v1/auth/signup", json=body("ada@example.com", invitation=token))
        assert ok.status_code == 201, ok.text
        async with db.sessionmaker() as session, transaction(session):
            ada = await session.scalar(select(User).where(User.email == "ada@example.com"))
            assert ada is not None and ada.email_verified_at is not None and not ada.is_admin
        # Once only.
        reused = await invited.post(
            "/v1/auth/signup", json=body("ada@example.com", invitation=token)
        )
        assert_error(reused, 403, "forbidden")
        assert other.json() == reused.json()
        assert (
            await invited.get("/v1/admin/invitations", headers=bearer(admin["token"]))
        ).json() == []


async def test_expired_and_revoked_invitations_are_refused(api: Client, db: Database) -> None:
    async with api(signup="open") as opened:
        admin = await make_admin(opened)
    async with api(signup="invite") as invited:
        expiring = await invite(invited, admin, "late@example.com")
        async with db.sessionmaker() as session, transaction(session, write=True):
            past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            await session.execute(update(Invitation).values(expires_at=past))
        late = await invited.post(
            "/v1/auth/signup", json=body("late@example.com", invitation=expiring["token"])
        )
        assert_error(late, 403, "forbidden")

        revoked = await invite(invited, admin, "gone@example.com")
        resp = await invited.delete(
            f"/v1/admin/invitations/{revoked['id']}", headers=bearer(admin["token"])
        )
        assert resp.status_code == 204
        gone = await invited.post(
            "/v1/auth/signup", json=body("gone@example.com", invitation=revoked["token"])
        )
        assert_error(gone, 403, "forbidden")
        again = await invited.delete(
            f"/v1/admin/invitations/{revoked['id']}", headers=bearer(admin["token"])
        )
        assert_error(again, 404, "not_found")

        # Inviting an email again replaces its pending invitation.
        first = await invite(invited, admin, "twice@example.com")
        second = await invite(invited, admin, "twice@example.com")
        stale = await invited.post(
            "/v1/auth/signup", json=body("twice@example.com", invitation=first["token"])
        )
        assert_error(stale, 403, "forbidden")
        fresh = await invited.post(
            "/v1/auth/signup", json=body("twice@example.com", invitation=second["token"])
        )
        assert fresh.status_code == 201, fresh.text
        # An email with an account is not invited (an admin may know that).
        taken = await invited.post(
            "/v1/admin/invitations",
            json={"email": "twice@example.com"},
            headers=bearer(admin["token"]),
        )
        assert_error(taken, 409, "email_taken")
    async with db.sessionmaker() as session, transaction(session):
        actions = (
            await session.scalars(
                select(AuditLog.action).where(AuditLog.resource_type == "invitation")
            )
        ).all()
    assert sorted(actions) == ["create"] * 4 + ["revoke"]


async def test_invitations_are_mailed_when_a_mail_server_is_configured(
    api: Client,
) -> None:
    async with api(signup="open") as opened:
        admin = await make_admin(opened)
    with mail_server() as mail:
        smtp = {**mail.settings(), "public_url": "https://wrenn.example"}
        async with api(signup="invite", **smtp) as invited:
            invitation = await invite(invited, admin, "ada@example.com")
            assert invitation["mailed"] is True
            assert invitation["url"].startswith("https://wrenn.example/signup#")
            message = await mail.wait_for("ada@example.com")
            assert message.link(r"/signup#") == invitation["url"]
            token = parse_qs(urlsplit(invitation["url"]).fragment)["invitation"][0]
            ok = await invited.post(
                "/v1/auth/signup", json=body("ada@example.com", invitation=token)
            )
            assert ok.status_code == 201, ok.text


async def test_open_signup_with_an_invitation_verifies_the_email(api: Client, db: Database) -> None:
    async with api(signup="open") as opened:
        admin = await make_admin(opened)
        invitation = await invite(opened, admin, "ada@example.com")
        plain = await opened.post("/v1/auth/signup", json=body("bob@example.com"))
        assert plain.status_code == 201
        ok = await opened.post(
            "/v1/auth/signup", json=body("ada@example.com", invitation=invitation["token"])
        )
        assert ok.status_code == 201
    async with db.sessionmaker() as session, transaction(session):
        rows = (await session.execute(select(User.email, User.email_verified_at))).all()
    verified = {email: at for email, at in rows}
    assert verified["ada@example.com"] is not None
    assert verified["bob@example.com"] is None


# --- A new user through GitHub obeys the same setting -------------------------------------------


async def test_github_sign_in_of_a_new_user_obeys_the_signup_setting(
    api: Client, github: FakeGitHub, db: Database
) -> None:
    async with api(signup="open") as opened:
        admin = await make_admin(opened)
    add_ada(github)
    base = github_settings(Settings(), github)
    oauth = {k: getattr(base, k) for k in base.model_fields_set if k.startswith("github_")}

    async with api(signup="closed", **oauth) as closed:
        refused = await login(closed, "code-ada")
        assert httpx.URL(refused.headers["location"]).params["error"] == "signup_disabled"
    async with api(signup="invite", **oauth) as invited:
        refused = await login(invited, "code-ada")
        assert httpx.URL(refused.headers["location"]).params["error"] == "signup_disabled"
        assert await count(db, User) == 1
        # Invited: GitHub vouches for the email the invitation was made for.
        await invite(invited, admin, "ada@example.com")
        ada = await signed_in(invited, await login(invited, "code-ada"))
        assert ada["email"] == "ada@example.com"
        assert (
            await invited.get("/v1/admin/invitations", headers=bearer(admin["token"]))
        ).json() == []
    async with api(signup="closed", **oauth) as closed:
        # Closing signup later does not lock out an existing GitHub user.
        again = await signed_in(closed, await login(closed, "code-ada"))
        assert again["user_id"] == ada["user_id"]
