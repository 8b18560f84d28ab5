"""Signup, login, /v1/me and the JWT checks behind them."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import delete, select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import Team, TeamMember, User
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.security import TokenCodec, UserClaims

from .conftest import TEST_JWT_SECRET
from .helpers import PASSWORD, assert_error, bearer, count, signup


async def test_signup_creates_active_account_and_default_team(
    client: httpx.AsyncClient, db: Database
) -> None:
    body = await signup(client, email="Ada@Example.COM", name="  Ada  ")
    assert set(body) == {
        "message", "token", "user_id", "team_id", "email", "name", "activation_required"
    }  # fmt: skip
    assert body["activation_required"] is False
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada"
    user_id = ids.USER.parse(body["user_id"])
    team_id = ids.TEAM.parse(body["team_id"])

    async with db.sessionmaker() as session, transaction(session):
        user = await session.get(User, user_id)
        assert user is not None and user.is_active
        assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
        assert PASSWORD not in user.password_hash
        team = await session.get(Team, team_id)
        assert team is not None and team.name == "Ada's Team"
        membership = await session.get(TeamMember, (team_id, user_id))
        assert membership is not None and membership.role == "owner" and membership.is_default

    me = await client.get("/v1/me", headers=bearer(body["token"]))
    assert me.status_code == 200
    assert me.json() == {
        "user_id": body["user_id"],
        "name": "Ada",
        "email": "ada@example.com",
        "has_password": True,
        "providers": [],
        "team_id": body["team_id"],
        "role": "owner",
        "is_admin": True,
    }


async def test_longest_name_still_gets_a_team(client: httpx.AsyncClient, db: Database) -> None:
    body = await signup(client, name="N" * 100)
    async with db.sessionmaker() as session, transaction(session):
        team = await session.get(Team, ids.TEAM.parse(body["team_id"]))
        assert team is not None and team.name == "N" * 100


async def test_only_the_first_account_is_admin(client: httpx.AsyncClient) -> None:
    first = await signup(client)
    second = await signup(client)
    me1 = await client.get("/v1/me", headers=bearer(first["token"]))
    me2 = await client.get("/v1/me", headers=bearer(second["token"]))
    assert me1.json()["is_admin"] is True
    assert me2.json()["is_admin"] is False


async def test_login(client: httpx.AsyncClient) -> None:
    created = await signup(client, email="grace@example.com", name="Grace")
    resp = await client.post(
        "/v1/auth/login", json={"email": " GRACE@example.com ", "password": PASSWORD}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"token", "user_id", "team_id", "email", "name"}
    assert (body["user_id"], body["team_id"]) == (created["user_id"], created["team_id"])
    me = await client.get("/v1/me", headers=bearer(body["token"]))
    assert me.status_code == 200 and me.json()["email"] == "grace@example.com"


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": "grace@example.com", "password": "wrong password"},
        {"email": "nobody@example.com", "password": PASSWORD},
        {"email": "not an email", "password": PASSWORD},
        {"email": "grace@example.com", "password": ""},
    ],
)
async def test_login_rejects_bad_credentials(
    client: httpx.AsyncClient, credentials: dict[str, str]
) -> None:
    await signup(client, email="grace@example.com")
    resp = await client.post("/v1/auth/login", json=credentials)
    error = assert_error(resp, 401, "unauthorized")
    # One message for every failure: the answer does not tell which emails exist.
    assert error["message"] == "invalid email or password"


async def test_login_refused_for_deactivated_account(
    client: httpx.AsyncClient, db: Database
) -> None:
    body = await signup(client, email="gone@example.com")
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(update(User).values(is_active=False))
    resp = await client.post(
        "/v1/auth/login", json={"email": "gone@example.com", "password": PASSWORD}
    )
    # Told only to whoever knows the password; a wrong one learns nothing.
    assert_error(resp, 403, "account_disabled")
    resp = await client.post(
        "/v1/auth/login", json={"email": "gone@example.com", "password": "not the password"}
    )
    assert_error(resp, 401, "unauthorized")
    # Tokens issued before the deactivation stop working too (the DB is re-checked).
    assert_error(await client.get("/v1/me", headers=bearer(body["token"])), 401, "unauthorized")


async def test_duplicate_email_conflicts(client: httpx.AsyncClient, db: Database) -> None:
    await signup(client, email="dup@example.com")
    resp = await client.post(
        "/v1/auth/signup",
        json={"email": "DUP@example.com", "password": "another password", "name": "Other"},
    )
    assert_error(resp, 409, "email_taken")
    assert await count(db, User) == 1
    assert await count(db, Team) == 2  # the platform team and the first user's


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "a@example.com", "password": "short", "name": "A"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD, "name": "A"}, "email"),
        ({"email": "a@localhost", "password": PASSWORD, "name": "A"}, "email"),
        ({"email": "a@example.com", "password": PASSWORD}, "name"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "   "}, "name"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "x" * 101}, "name"),
        ({"email": "a@example.com", "password": 12345678, "name": "A"}, "password"),
        ({"password": PASSWORD, "name": "A"}, "email"),
    ],
)
async def test_signup_rejects_bad_input(
    client: httpx.AsyncClient, db: Database, payload: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v1/auth/signup", json=payload)
    error = assert_error(resp, 400, "invalid_request")
    assert field in error["message"]
    assert await count(db, User) == 0
    assert await count(db, Team) == 1  # the platform team only


async def test_malformed_json_is_invalid_request(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/auth/signup", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(resp, 400, "invalid_request")


def _codec(secret: str = TEST_JWT_SECRET, lifetime: int = 3600) -> TokenCodec:
    return TokenCodec(secret, dt.timedelta(seconds=lifetime))


def _claims(body: dict[str, Any]) -> UserClaims:
    return UserClaims(
        user_id=ids.USER.parse(body["user_id"]),
        team_id=ids.TEAM.parse(body["team_id"]),
        role="owner",
        is_admin=True,
        name="x",
        email=body["email"],
    )


async def test_token_checks(client: httpx.AsyncClient) -> None:
    body = await signup(client)
    token = body["token"]
    assert (await client.get("/v1/me", headers=bearer(token))).status_code == 200

    header, payload, signature = token.split(".")
    tampered_sig = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    forged_payload = jwt.utils.base64url_encode(
        b'{"typ":"user","sub":"%s","iat":1,"exp":99999999999}' % body["user_id"].encode()
    ).decode()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    cases = {
        "no header": {},
        "not bearer": {"Authorization": f"Basic {token}"},
        "garbage": bearer("not-a-jwt"),
        "bad signature": bearer(f"{header}.{payload}.{tampered_sig}"),
        "forged payload": bearer(f"{header}.{forged_payload}.{signature}"),
        "other secret": bearer(_codec("another-secret-" + "y" * 40).issue(_claims(body))),
        "expired": bearer(_codec(lifetime=60).issue(_claims(body), now=past)),
        "alg none": bearer(
            jwt.encode(
                {"typ": "user", "sub": body["user_id"], "iat": 1, "exp": 99999999999},
                key=None,
                algorithm="none",
            )
        ),
    }
    for name, headers in cases.items():
        resp = await client.get("/v1/me", headers=headers)
        assert resp.status_code == 401, name
        assert_error(resp, 401, "unauthorized")
    expired = await client.get("/v1/me", headers=cases["expired"])
    assert "expired" in expired.json()["error"]["message"]


async def test_token_of_removed_member_is_refused(client: httpx.AsyncClient, db: Database) -> None:
    body = await signup(client)
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(delete(TeamMember))
    assert_error(await client.get("/v1/me", headers=bearer(body["token"])), 401, "unauthorized")


async def test_role_comes_from_the_database(client: httpx.AsyncClient, db: Database) -> None:
    body = await signup(client)
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(update(TeamMember).values(role="member"))
    me = await client.get("/v1/me", headers=bearer(body["token"]))
    # The token still says owner; the answer follows the database.
    assert me.json()["role"] == "member"


async def test_login_lands_in_oldest_team_without_default(
    client: httpx.AsyncClient, db: Database
) -> None:
    body = await signup(client, email="inv@example.com")
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(update(TeamMember).values(is_default=False))
    resp = await client.post(
        "/v1/auth/login", json={"email": "inv@example.com", "password": PASSWORD}
    )
    assert resp.json()["team_id"] == body["team_id"]
    # A soft-deleted team is never landed in.
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(Team)
            .where(Team.id == ids.TEAM.parse(body["team_id"]))
            .values(deleted_at=dt.datetime.now(dt.UTC))
        )
    resp = await client.post(
        "/v1/auth/login", json={"email": "inv@example.com", "password": PASSWORD}
    )
    assert resp.status_code == 200 and resp.json()["team_id"] == ""
    async with db.sessionmaker() as session, transaction(session):
        assert (await session.scalars(select(User.email))).all() == ["inv@example.com"]


async def test_concurrent_signups(client: httpx.AsyncClient, db: Database) -> None:
    async def attempt(email: str) -> int:
        resp = await client.post(
            "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Racer"}
        )
        return resp.status_code

    same = await asyncio.gather(*(attempt("race@example.com") for _ in range(4)))
    assert sorted(same) == [201, 409, 409, 409]
    distinct = await asyncio.gather(*(attempt(f"r{i}@example.com") for i in range(4)))
    assert distinct == [201] * 4
    assert await count(db, User) == 5
