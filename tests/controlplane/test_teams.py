"""Teams: create, list, detail, rename, soft delete, and switching the active team."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from sqlalchemy import select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import Sandbox, Team, User
from wrenn_server.controlplane.db.session import Database, transaction

from .helpers import assert_error, bearer, count, signup
from .team_helpers import add_member, audit_actions, create_team, login, switch

SLUG_RE = re.compile(r"[0-9a-f]{6}-[0-9a-f]{6}")


async def _team_row(db: Database, team_id: str) -> Team:
    async with db.sessionmaker() as session, transaction(session):
        team = await session.get(Team, ids.TEAM.parse(team_id))
        assert team is not None
        return team


async def test_create_list_and_detail(client: httpx.AsyncClient) -> None:
    owner = await signup(client, name="Kyle")
    created = await create_team(client, owner["token"], "  Ops-team @ Kyle's  ")
    assert created["name"] == "Ops-team @ Kyle's"
    assert created["role"] == "owner"
    assert SLUG_RE.fullmatch(created["slug"])
    ids.TEAM.parse(created["id"])

    listed = await client.get("/v1/teams", headers=bearer(owner["token"]))
    assert listed.status_code == 200
    by_id = {t["id"]: t for t in listed.json()}
    assert set(by_id) == {owner["team_id"], created["id"]}
    assert by_id[owner["team_id"]]["name"] == "Kyle's Team"
    assert all(t["role"] == "owner" for t in by_id.values())

    # The token acts in the signup team: another team's id is refused until the user switches.
    resp = await client.get(f"/v1/teams/{created['id']}", headers=bearer(owner["token"]))
    assert_error(resp, 403, "forbidden")
    token = await switch(client, owner["token"], created["id"])
    detail = await client.get(f"/v1/teams/{created['id']}", headers=bearer(token))
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["team"]["id"] == created["id"] and body["team"]["slug"] == created["slug"]
    [member] = body["members"]
    assert member["user_id"] == owner["user_id"]
    assert (member["name"], member["email"], member["role"]) == ("Kyle", owner["email"], "owner")
    members = await client.get(f"/v1/teams/{created['id']}/members", headers=bearer(token))
    assert members.json() == body["members"]


@pytest.mark.parametrize(
    "name", ["", "   ", "n" * 101, "a/b", "<script>", "semi;colon", "tab\there", 5]
)
async def test_bad_team_names_are_refused(
    client: httpx.AsyncClient, db: Database, name: object
) -> None:
    owner = await signup(client)
    before = await count(db, Team)
    resp = await client.post("/v1/teams", json={"name": name}, headers=bearer(owner["token"]))
    assert_error(resp, 400, "invalid_request")
    resp = await client.patch(
        f"/v1/teams/{owner['team_id']}", json={"name": name}, headers=bearer(owner["token"])
    )
    assert_error(resp, 400, "invalid_request")
    assert await count(db, Team) == before
    assert (await _team_row(db, owner["team_id"])).name == "Ada Lovelace's Team"


async def test_rename_needs_owner_or_admin(client: httpx.AsyncClient, db: Database) -> None:
    owner = await signup(client)
    admin = await signup(client)
    member = await signup(client)
    team = owner["team_id"]
    await add_member(client, owner["token"], team, admin["email"], "admin")
    await add_member(client, owner["token"], team, member["email"])
    admin_token = await switch(client, admin["token"], team)
    member_token = await switch(client, member["token"], team)

    resp = await client.patch(f"/v1/teams/{team}", json={"name": "x"}, headers=bearer(member_token))
    assert_error(resp, 403, "forbidden")
    assert (await _team_row(db, team)).name == "Ada Lovelace's Team"

    resp = await client.patch(
        f"/v1/teams/{team}", json={"name": "Admins' team"}, headers=bearer(admin_token)
    )
    assert resp.status_code == 204, resp.text
    resp = await client.patch(
        f"/v1/teams/{team}", json={"name": "Owner_team 2"}, headers=bearer(owner["token"])
    )
    assert resp.status_code == 204, resp.text
    row = await _team_row(db, team)
    assert row.name == "Owner_team 2"
    renames = await audit_actions(db, team, "team")
    assert sorted(meta["new_name"] for action, (_rid, meta) in renames if action == "rename") == [
        "Admins' team",
        "Owner_team 2",
    ]


async def test_another_teams_detail_is_invisible(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    outsider = await signup(client)
    headers = bearer(outsider["token"])
    for team_id in (owner["team_id"], ids.TEAM.format(uuid.uuid4()), "team-nope", "garbage"):
        assert_error(await client.get(f"/v1/teams/{team_id}", headers=headers), 404, "not_found")
        resp = await client.get(f"/v1/teams/{team_id}/members", headers=headers)
        assert_error(resp, 404, "not_found")
    resp = await client.patch(
        f"/v1/teams/{owner['team_id']}", json={"name": "mine now"}, headers=headers
    )
    assert_error(resp, 404, "not_found")
    assert_error(
        await client.delete(f"/v1/teams/{owner['team_id']}", headers=headers), 404, "not_found"
    )
    # Team management is for user sessions: an API key is not enough.
    key = await client.post("/v1/api-keys", json={}, headers=bearer(owner["token"]))
    resp = await client.get("/v1/teams", headers={"X-API-Key": key.json()["key"]})
    assert_error(resp, 401, "unauthorized")


async def _add_capsule(db: Database, team_id: str, status: str) -> uuid.UUID:
    async with db.sessionmaker() as session, transaction(session, write=True):
        sandbox = Sandbox(
            team_id=ids.TEAM.parse(team_id), template="base", status=status, vcpus=1, memory_mb=512
        )
        session.add(sandbox)
        await session.flush()
        return sandbox.id


async def _capsule_status(db: Database, sandbox_id: uuid.UUID) -> str:
    async with db.sessionmaker() as session, transaction(session):
        status = await session.scalar(select(Sandbox.status).where(Sandbox.id == sandbox_id))
        assert status is not None
        return status


async def test_delete_is_owner_only_and_soft(client: httpx.AsyncClient, db: Database) -> None:
    owner = await signup(client)
    admin = await signup(client)
    team = owner["team_id"]
    await add_member(client, owner["token"], team, admin["email"], "admin")
    admin_token = await switch(client, admin["token"], team)
    running = await _add_capsule(db, team, "running")
    paused = await _add_capsule(db, team, "paused")
    errored = await _add_capsule(db, team, "error")

    assert_error(
        await client.delete(f"/v1/teams/{team}", headers=bearer(admin_token)), 403, "forbidden"
    )
    assert (await _team_row(db, team)).deleted_at is None
    assert await _capsule_status(db, running) == "running"

    slug = (await _team_row(db, team)).slug
    resp = await client.delete(f"/v1/teams/{team}", headers=bearer(owner["token"]))
    assert resp.status_code == 204, resp.text

    # The row stays (so the slug stays taken), marked deleted; its capsules are stopped.
    row = await _team_row(db, team)
    assert row.deleted_at is not None and row.slug == slug
    assert [await _capsule_status(db, s) for s in (running, paused, errored)] == [
        "stopped",
        "stopped",
        "error",
    ]
    # Gone everywhere: lists, detail, tokens acting in it, switching to it.
    second = await signup(client)
    for token in (owner["token"], admin_token):
        assert_error(await client.get("/v1/me", headers=bearer(token)), 401, "unauthorized")
    owner_fresh = await login(client, owner["email"])
    assert owner_fresh["team_id"] == ""
    listed = await client.get("/v1/teams", headers=bearer(owner_fresh["token"]))
    assert listed.json() == []
    resp = await client.post(
        "/v1/auth/switch-team", json={"team_id": team}, headers=bearer(owner_fresh["token"])
    )
    assert_error(resp, 404, "not_found")
    resp = await client.get(f"/v1/teams/{team}", headers=bearer(second["token"]))
    assert_error(resp, 404, "not_found")
    # The admin's login falls back to their own team.
    assert (await login(client, admin["email"]))["team_id"] == admin["team_id"]


async def test_login_falls_back_to_another_team_after_delete(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    other = await create_team(client, owner["token"], "Second")
    resp = await client.delete(f"/v1/teams/{owner['team_id']}", headers=bearer(owner["token"]))
    assert resp.status_code == 204, resp.text
    fresh = await login(client, owner["email"])
    assert fresh["team_id"] == other["id"]
    me = await client.get("/v1/me", headers=bearer(fresh["token"]))
    assert me.status_code == 200 and me.json()["role"] == "owner"
    listed = await client.get("/v1/teams", headers=bearer(fresh["token"]))
    assert [t["id"] for t in listed.json()] == [other["id"]]


async def test_switch_team_checks_the_database(client: httpx.AsyncClient, db: Database) -> None:
    owner = await signup(client, name="Old Name")
    stranger = await signup(client)
    headers = bearer(owner["token"])
    resp = await client.post(
        "/v1/auth/switch-team", json={"team_id": stranger["team_id"]}, headers=headers
    )
    assert_error(resp, 403, "forbidden")
    for missing in (ids.TEAM.format(uuid.uuid4()), "not-an-id"):
        resp = await client.post("/v1/auth/switch-team", json={"team_id": missing}, headers=headers)
        assert_error(resp, 404, "not_found")
    resp = await client.post("/v1/auth/switch-team", json={}, headers=headers)
    assert_error(resp, 400, "invalid_request")

    # The name in the new token comes from the database, not from the old token.
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(User).where(User.id == ids.USER.parse(owner["user_id"])).values(name="New Name")
        )
    team = await create_team(client, owner["token"], "Another")
    resp = await client.post("/v1/auth/switch-team", json={"team_id": team["id"]}, headers=headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["team_id"], body["user_id"], body["name"]) == (
        team["id"],
        owner["user_id"],
        "New Name",
    )
    me = await client.get("/v1/me", headers=bearer(body["token"]))
    assert (me.json()["team_id"], me.json()["role"]) == (team["id"], "owner")
