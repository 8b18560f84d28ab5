"""What ends someone's access: leaving or being removed from a team (their API keys for it), an
admin deactivating the account (sign-in, JWTs, API keys); and what a team admin may learn about
other people's accounts (adding members, the user search)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import APIKey, AuditLog, TeamMember
from wrenn_server.controlplane.db.session import Database, transaction

from .helpers import PASSWORD, assert_error, bearer, signup
from .team_helpers import add_member, create_team, login, switch


async def new_key(client: httpx.AsyncClient, token: str, name: str) -> dict[str, str]:
    resp = await client.post("/v1/api-keys", json={"name": name}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    return {"X-API-Key": resp.json()["key"], "id": resp.json()["id"]}


async def works(client: httpx.AsyncClient, key: dict[str, str]) -> int:
    return (await client.get("/v1/capsules", headers={"X-API-Key": key["X-API-Key"]})).status_code


async def shared_team(client: httpx.AsyncClient) -> dict[str, Any]:
    """Olive owns a team; Mel is a member of it (acting in it) with an API key for it."""
    await signup(client, email="root@example.com")
    olive = await signup(client, email="olive@example.com", name="Olive")
    mel = await signup(client, email="mel@example.com", name="Mel")
    team = await create_team(client, olive["token"], "Shared")
    olive_token = await switch(client, olive["token"], team["id"])
    await add_member(client, olive_token, team["id"], "mel@example.com")
    mel_token = await switch(client, mel["token"], team["id"])
    mel_key = await new_key(client, mel_token, "mel's laptop")
    olive_key = await new_key(client, olive_token, "olive's ci")
    # Mel's key for her own team is not the shared team's business.
    own_key = await new_key(client, mel["token"], "mel's own")
    for key in (mel_key, olive_key, own_key):
        assert await works(client, key) == 200
    return {
        "team": team,
        "olive": olive_token,
        "mel": mel,
        "mel_token": mel_token,
        "mel_key": mel_key,
        "olive_key": olive_key,
        "own_key": own_key,
    }


async def test_a_removed_members_keys_stop_working(client: httpx.AsyncClient, db: Database) -> None:
    world = await shared_team(client)
    team_id = world["team"]["id"]
    resp = await client.delete(
        f"/v1/teams/{team_id}/members/{world['mel']['user_id']}", headers=bearer(world["olive"])
    )
    assert resp.status_code == 204
    # The very next request with her key is refused; the team's other keys, and her keys of
    # other teams, go on working.
    assert_error(
        await client.get("/v1/capsules", headers={"X-API-Key": world["mel_key"]["X-API-Key"]}),
        401,
        "unauthorized",
    )
    assert await works(client, world["olive_key"]) == 200
    assert await works(client, world["own_key"]) == 200
    # Revoked, so the team sees it gone, and audited.
    listed = await client.get("/v1/api-keys", headers=bearer(world["olive"]))
    assert [k["name"] for k in listed.json()] == ["olive's ci"]
    async with db.sessionmaker() as session, transaction(session):
        entry = await session.scalar(
            select(AuditLog).where(
                AuditLog.resource_id == world["mel_key"]["id"], AuditLog.action == "revoke"
            )
        )
        assert entry is not None and entry.metadata_["reason"] == "member_removed"
    # Added back later, the old key stays revoked.
    await add_member(client, world["olive"], team_id, "mel@example.com")
    assert await works(client, world["mel_key"]) == 401


async def test_a_member_who_left_keeps_no_key(client: httpx.AsyncClient) -> None:
    world = await shared_team(client)
    team_id = world["team"]["id"]
    resp = await client.post(f"/v1/teams/{team_id}/leave", headers=bearer(world["mel_token"]))
    assert resp.status_code == 204
    assert await works(client, world["mel_key"]) == 401
    assert await works(client, world["olive_key"]) == 200


async def test_a_key_whose_creator_is_no_member_is_refused_even_unrevoked(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Membership is checked on every request, whatever path removed it."""
    world = await shared_team(client)
    async with db.sessionmaker() as session, transaction(session, write=True):
        member = await session.get(
            TeamMember,
            (ids.TEAM.parse(world["team"]["id"]), ids.USER.parse(world["mel"]["user_id"])),
        )
        assert member is not None
        await session.delete(member)
    async with db.sessionmaker() as session, transaction(session):
        key = await session.get(APIKey, ids.API_KEY.parse(world["mel_key"]["id"]))
        assert key is not None and key.revoked_at is None
    assert await works(client, world["mel_key"]) == 401


# --- Deactivation --------------------------------------------------------------------------------


async def set_active(
    client: httpx.AsyncClient, admin: dict[str, Any], user_id: str, active: bool
) -> httpx.Response:
    return await client.put(
        f"/v1/admin/users/{user_id}/active",
        json={"active": active},
        headers=bearer(admin["token"]),
    )


async def test_deactivation_ends_sign_in_sessions_and_keys(
    client: httpx.AsyncClient, db: Database
) -> None:
    admin = await signup(client, email="root@example.com")
    ada = await signup(client, email="ada@example.com")
    key = await new_key(client, ada["token"], "ada's key")
    resp = await set_active(client, admin, ada["user_id"], False)
    assert resp.status_code == 204, resp.text

    assert_error(await client.get("/v1/me", headers=bearer(ada["token"])), 401, "unauthorized")
    assert await works(client, key) == 401
    denied = await client.post(
        "/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    # The Go system's answer to the right password of a deactivated account; a wrong one is
    # still the same 401 as for any other account.
    assert_error(denied, 403, "account_disabled")
    wrong = await client.post(
        "/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD + "x"}
    )
    assert_error(wrong, 401, "unauthorized")
    users = (await client.get("/v1/admin/users", headers=bearer(admin["token"]))).json()["users"]
    assert [(u["is_active"], u["status"]) for u in users if u["email"] == "ada@example.com"] == [
        (False, "disabled")
    ]

    resp = await set_active(client, admin, ada["user_id"], True)
    assert resp.status_code == 204
    # Back: she signs in again and her team's key works again; the old JWT stays revoked.
    assert (await login(client, "ada@example.com"))["user_id"] == ada["user_id"]
    assert await works(client, key) == 200
    assert_error(await client.get("/v1/me", headers=bearer(ada["token"])), 401, "unauthorized")
    async with db.sessionmaker() as session, transaction(session):
        actions = (
            await session.scalars(
                select(AuditLog.action)
                .where(AuditLog.resource_type == "user", AuditLog.scope == "admin")
                .order_by(AuditLog.created_at, AuditLog.id)
            )
        ).all()
    assert actions == ["deactivate", "activate"]


async def test_deactivation_is_for_admins_and_not_of_oneself(client: httpx.AsyncClient) -> None:
    admin = await signup(client, email="root@example.com")
    ada = await signup(client, email="ada@example.com")
    assert_error(await set_active(client, ada, admin["user_id"], False), 403, "forbidden")
    assert_error(await set_active(client, admin, admin["user_id"], False), 400, "invalid_request")
    missing = await set_active(client, admin, ids.USER.format(ids.new_id()), False)
    assert_error(missing, 404, "not_found")
    assert_error(await set_active(client, admin, "usr-x", False), 400, "invalid_request")
    loose = await client.put(
        f"/v1/admin/users/{ada['user_id']}/active",
        json={"active": "no"},
        headers=bearer(admin["token"]),
    )
    assert_error(loose, 400, "invalid_request")
    assert (await client.get("/v1/me", headers=bearer(ada["token"]))).status_code == 200


# --- What a team admin learns about other people's accounts --------------------------------------


async def test_adding_a_member_says_the_same_for_every_unusable_email(
    client: httpx.AsyncClient,
) -> None:
    admin = await signup(client, email="root@example.com")
    olive = await signup(client, email="olive@example.com")
    gone = await signup(client, email="gone@example.com")
    assert (await set_active(client, admin, gone["user_id"], False)).status_code == 204
    answers = []
    for email in ("nobody@example.com", "gone@example.com"):
        resp = await client.post(
            f"/v1/teams/{olive['team_id']}/members",
            json={"email": email},
            headers=bearer(olive["token"]),
        )
        assert_error(resp, 404, "not_found")
        answers.append(resp.json())
    assert answers[0] == answers[1]
    assert "no account" not in answers[0]["error"]["message"]


async def test_user_search_finds_only_people_one_shares_a_team_with(
    client: httpx.AsyncClient,
) -> None:
    admin = await signup(client, email="root@example.com")
    olive = await signup(client, email="olive@example.com")
    await signup(client, email="stranger@example.com")
    await signup(client, email="mel@example.com")
    await add_member(client, olive["token"], olive["team_id"], "mel@example.com")

    async def search(token: str, prefix: str) -> list[str]:
        resp = await client.get("/v1/users/search", params={"email": prefix}, headers=bearer(token))
        assert resp.status_code == 200, resp.text
        return [r["email"] for r in resp.json()]

    assert await search(olive["token"], "stranger@") == []
    assert await search(olive["token"], "mel@") == ["mel@example.com"]
    assert await search(olive["token"], "olive@") == ["olive@example.com"]
    # A platform admin sees every account anyway.
    assert await search(admin["token"], "stranger@") == ["stranger@example.com"]
