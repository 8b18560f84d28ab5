"""Self-service on one's own account: renaming yourself (`PATCH /v1/me`) and deleting your
account (`DELETE /v1/me`): who is refused, and what goes with the account. The capsules of a
deleted account's team: tests/orchestration/test_account_deletion.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import (
    APIKey,
    AuditLog,
    OAuthIdentity,
    Team,
    TeamMember,
    User,
)
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.security import TokenCodec
from wrenn_server.controlplane.settings import Settings

from .helpers import PASSWORD, assert_error, bearer, signup
from .team_helpers import add_member, switch


async def password_login(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})


async def delete_me(client: httpx.AsyncClient, token: str, confirmation: str) -> httpx.Response:
    return await client.request(
        "DELETE", "/v1/me", json={"confirmation": confirmation}, headers=bearer(token)
    )


async def first_admin(client: httpx.AsyncClient) -> dict[str, Any]:
    """The installation's first account (a platform admin), so the others are plain users."""
    return await signup(client, email="root@example.com", name="Root")


# --- PATCH /v1/me -------------------------------------------------------------------------------


async def test_rename_yourself(client: httpx.AsyncClient, settings: Settings) -> None:
    ada = await signup(client, email="ada@example.com", name="Ada")
    resp = await client.patch(
        "/v1/me", json={"name": "  Ada Lovelace "}, headers=bearer(ada["token"])
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"token", "user_id", "team_id", "email", "name"}
    assert (body["name"], body["email"], body["user_id"]) == (
        "Ada Lovelace",
        "ada@example.com",
        ada["user_id"],
    )
    # The new token carries the new name and stays in the caller's team.
    assert body["team_id"] == ada["team_id"]
    codec = TokenCodec(settings.resolve_jwt_secret(), dt.timedelta(hours=1))
    assert codec.verify(body["token"]).name == "Ada Lovelace"
    for token in (body["token"], ada["token"]):
        me = await client.get("/v1/me", headers=bearer(token))
        assert me.status_code == 200 and me.json()["name"] == "Ada Lovelace"


async def test_rename_keeps_the_active_team(client: httpx.AsyncClient) -> None:
    owner = await signup(client, email="owner@example.com")
    ada = await signup(client, email="ada@example.com")
    await add_member(client, owner["token"], owner["team_id"], "ada@example.com")
    in_owner_team = await switch(client, ada["token"], owner["team_id"])
    resp = await client.patch("/v1/me", json={"name": "Ada"}, headers=bearer(in_owner_team))
    assert resp.status_code == 200, resp.text
    assert resp.json()["team_id"] == owner["team_id"]


async def test_rename_refuses_bad_names(client: httpx.AsyncClient) -> None:
    ada = await signup(client, email="ada@example.com", name="Ada")
    for body in ({"name": ""}, {"name": "   "}, {"name": "x" * 101}, {}, {"name": 7}):
        resp = await client.patch("/v1/me", json=body, headers=bearer(ada["token"]))
        assert_error(resp, 400, "invalid_request")
    assert_error(await client.patch("/v1/me", json={"name": "Eve"}), 401, "unauthorized")
    me = await client.get("/v1/me", headers=bearer(ada["token"]))
    assert me.json()["name"] == "Ada"


async def test_rename_needs_a_user_session(client: httpx.AsyncClient) -> None:
    ada = await signup(client, email="ada@example.com", name="Ada")
    key = await client.post("/v1/api-keys", json={"name": "k"}, headers=bearer(ada["token"]))
    resp = await client.patch(
        "/v1/me", json={"name": "Eve"}, headers={"X-API-Key": key.json()["key"]}
    )
    assert resp.status_code == 401, resp.text


# --- DELETE /v1/me ------------------------------------------------------------------------------


async def test_delete_account(client: httpx.AsyncClient, db: Database) -> None:
    await first_admin(client)
    owner = await signup(client, email="owner@example.com")
    ada = await signup(client, email="Ada@Example.com", name="Ada")
    other_session = (await password_login(client, "ada@example.com")).json()["token"]
    key = (
        await client.post("/v1/api-keys", json={"name": "k"}, headers=bearer(ada["token"]))
    ).json()
    # Ada is also a member of Owner's team, with a key there.
    await add_member(client, owner["token"], owner["team_id"], "ada@example.com")
    in_owner_team = await switch(client, ada["token"], owner["team_id"])
    owner_team_key = (
        await client.post("/v1/api-keys", json={"name": "k2"}, headers=bearer(in_owner_team))
    ).json()

    user_id = ids.USER.parse(ada["user_id"])
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(OAuthIdentity(user_id=user_id, provider="github", provider_user_id="42"))

    resp = await delete_me(client, ada["token"], " ADA@example.com ")
    assert resp.status_code == 204, resp.text
    assert resp.content == b""

    # No session, key or password works any more.
    for headers in (
        bearer(ada["token"]),
        bearer(other_session),
        bearer(in_owner_team),
        {"X-API-Key": key["key"]},
        {"X-API-Key": owner_team_key["key"]},
    ):
        assert_error(await client.get("/v1/capsules", headers=headers), 401, "unauthorized")
    assert_error(await password_login(client, "ada@example.com"), 401, "unauthorized")

    async with db.sessionmaker() as session:
        assert not (await session.scalars(select(OAuthIdentity))).all()
        user = await session.get(User, user_id)
        assert user is not None and user.deleted_at is not None and not user.is_active
        assert user.password_hash is None and user.email != "ada@example.com"
        team = await session.get(Team, ids.TEAM.parse(ada["team_id"]))
        assert team is not None and team.deleted_at is not None
        assert not (
            await session.scalars(select(TeamMember).where(TeamMember.user_id == user_id))
        ).all()
        keys = (await session.scalars(select(APIKey).where(APIKey.created_by == user_id))).all()
        assert len(keys) == 2 and all(k.revoked_at is not None for k in keys)
        audit = (
            await session.scalars(
                select(AuditLog).where(
                    AuditLog.resource_type == "user", AuditLog.action == "delete"
                )
            )
        ).all()
        assert len(audit) == 1 and audit[0].metadata_["email"] == "ada@example.com"
    # The owner's team lost its member; the owner is untouched.
    members = await client.get(
        f"/v1/teams/{owner['team_id']}/members", headers=bearer(owner["token"])
    )
    assert [m["email"] for m in members.json()] == ["owner@example.com"]

    # The address is free for a new account, a different one.
    again = await signup(client, email="ada@example.com", name="New Ada")
    assert again["user_id"] != ada["user_id"] and again["team_id"] != ada["team_id"]
    assert (await password_login(client, "ada@example.com")).status_code == 200


async def test_delete_needs_the_email_as_confirmation(
    client: httpx.AsyncClient, db: Database
) -> None:
    await first_admin(client)
    ada = await signup(client, email="ada@example.com")
    for confirmation in ("", "eve@example.com", "ada@example"):
        assert_error(await delete_me(client, ada["token"], confirmation), 400, "invalid_request")
    resp = await client.request("DELETE", "/v1/me", headers=bearer(ada["token"]))
    assert_error(resp, 400, "invalid_request")
    assert_error(await delete_me(client, "", "ada@example.com"), 401, "unauthorized")
    assert (await client.get("/v1/me", headers=bearer(ada["token"]))).status_code == 200


async def test_owner_of_a_team_with_members_is_refused(client: httpx.AsyncClient) -> None:
    await first_admin(client)
    ada = await signup(client, email="ada@example.com")
    bob = await signup(client, email="bob@example.com")
    await add_member(client, ada["token"], ada["team_id"], "bob@example.com")
    error = assert_error(
        await delete_me(client, ada["token"], "ada@example.com"), 409, "owns_team_with_members"
    )
    assert "1 team" in error["message"]
    # Nothing happened: Ada still works, Bob is still in her team.
    assert (await client.get("/v1/me", headers=bearer(ada["token"]))).status_code == 200
    await switch(client, bob["token"], ada["team_id"])
    # Once Bob is removed, the account can go.
    resp = await client.delete(
        f"/v1/teams/{ada['team_id']}/members/{bob['user_id']}", headers=bearer(ada["token"])
    )
    assert resp.status_code == 204, resp.text
    assert (await delete_me(client, ada["token"], "ada@example.com")).status_code == 204


async def test_the_last_platform_admin_cannot_delete_their_account(
    client: httpx.AsyncClient,
) -> None:
    root = await first_admin(client)
    assert_error(await delete_me(client, root["token"], "root@example.com"), 409, "conflict")
    assert (await client.get("/v1/me", headers=bearer(root["token"]))).status_code == 200
