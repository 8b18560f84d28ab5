"""Team members: add by email, remove, role updates, leave, and the one-owner invariants."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import TeamMember
from wrenn_server.controlplane.db.session import Database

from .helpers import assert_error, bearer, count, signup
from .team_helpers import add_member, audit_actions, roles, switch


async def _team_of_three(client: httpx.AsyncClient) -> dict[str, Any]:
    """The owner's team with an admin and a member, each holding a token acting in it."""
    owner = await signup(client)
    admin = await signup(client)
    member = await signup(client)
    team = owner["team_id"]
    await add_member(client, owner["token"], team, admin["email"], "admin")
    await add_member(client, owner["token"], team, member["email"])
    return {
        "team": team,
        "owner": {**owner, "tok": owner["token"]},
        "admin": {**admin, "tok": await switch(client, admin["token"], team)},
        "member": {**member, "tok": await switch(client, member["token"], team)},
    }


async def test_add_member_by_email(client: httpx.AsyncClient, db: Database) -> None:
    owner = await signup(client)
    guest = await signup(client, name="Grace")
    team = owner["team_id"]
    resp = await client.post(
        f"/v1/teams/{team}/members",
        json={"email": "  " + guest["email"].upper() + " "},
        headers=bearer(owner["token"]),
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["user_id"], body["email"], body["name"], body["role"]) == (
        guest["user_id"],
        guest["email"],
        "Grace",
        "member",
    )
    assert body["joined_at"]
    assert await roles(db, team) == {owner["user_id"]: "owner", guest["user_id"]: "member"}

    # The new member sees the team and can switch to it.
    listed = await client.get("/v1/teams", headers=bearer(guest["token"]))
    assert {t["id"]: t["role"] for t in listed.json()} == {
        guest["team_id"]: "owner",
        team: "member",
    }
    await switch(client, guest["token"], team)

    before = await count(db, TeamMember)
    resp = await client.post(
        f"/v1/teams/{team}/members", json={"email": guest["email"]}, headers=bearer(owner["token"])
    )
    assert_error(resp, 400, "invalid_request")
    resp = await client.post(
        f"/v1/teams/{team}/members",
        json={"email": "nobody@example.com"},
        headers=bearer(owner["token"]),
    )
    assert_error(resp, 404, "not_found")
    for bad in ("not-an-email", "", None):
        resp = await client.post(
            f"/v1/teams/{team}/members", json={"email": bad}, headers=bearer(owner["token"])
        )
        assert_error(resp, 400, "invalid_request")
    assert await count(db, TeamMember) == before


async def test_role_permissions(client: httpx.AsyncClient, db: Database) -> None:
    t = await _team_of_three(client)
    team, owner, admin, member = t["team"], t["owner"], t["admin"], t["member"]
    outsider = await signup(client)
    start = await roles(db, team)

    # A member can neither add, remove nor change roles.
    resp = await client.post(
        f"/v1/teams/{team}/members",
        json={"email": outsider["email"]},
        headers=bearer(member["tok"]),
    )
    assert_error(resp, 403, "forbidden")
    for target in (admin, owner):
        resp = await client.delete(
            f"/v1/teams/{team}/members/{target['user_id']}", headers=bearer(member["tok"])
        )
        assert_error(resp, 403, "forbidden")
    resp = await client.patch(
        f"/v1/teams/{team}/members/{member['user_id']}",
        json={"role": "admin"},
        headers=bearer(member["tok"]),
    )
    assert_error(resp, 403, "forbidden")
    # Nobody touches the owner; an admin does not manage another admin (or themselves).
    for caller in (admin, owner):
        resp = await client.delete(
            f"/v1/teams/{team}/members/{owner['user_id']}", headers=bearer(caller["tok"])
        )
        assert_error(resp, 403, "forbidden")
        resp = await client.patch(
            f"/v1/teams/{team}/members/{owner['user_id']}",
            json={"role": "member"},
            headers=bearer(caller["tok"]),
        )
        assert_error(resp, 403, "forbidden")
    resp = await client.patch(
        f"/v1/teams/{team}/members/{admin['user_id']}",
        json={"role": "member"},
        headers=bearer(admin["tok"]),
    )
    assert_error(resp, 403, "forbidden")
    # "owner" is not an assignable role: ownership never moves.
    resp = await client.patch(
        f"/v1/teams/{team}/members/{member['user_id']}",
        json={"role": "owner"},
        headers=bearer(owner["tok"]),
    )
    assert_error(resp, 400, "invalid_request")
    assert await roles(db, team) == start

    # An admin adds and promotes members; the owner demotes admins.
    resp = await client.post(
        f"/v1/teams/{team}/members", json={"email": outsider["email"]}, headers=bearer(admin["tok"])
    )
    assert resp.status_code == 201, resp.text
    resp = await client.patch(
        f"/v1/teams/{team}/members/{member['user_id']}",
        json={"role": "admin"},
        headers=bearer(admin["tok"]),
    )
    assert resp.status_code == 204, resp.text
    resp = await client.patch(
        f"/v1/teams/{team}/members/{admin['user_id']}",
        json={"role": "member"},
        headers=bearer(owner["tok"]),
    )
    assert resp.status_code == 204, resp.text
    assert await roles(db, team) == {
        owner["user_id"]: "owner",
        admin["user_id"]: "member",
        member["user_id"]: "admin",
        outsider["user_id"]: "member",
    }
    # The demoted admin's next request runs with the role read from the database.
    resp = await client.delete(
        f"/v1/teams/{team}/members/{outsider['user_id']}", headers=bearer(admin["tok"])
    )
    assert_error(resp, 403, "forbidden")

    events = await audit_actions(db, team, "member")
    assert sorted((action, rid) for action, (rid, _meta) in events) == sorted(
        [
            ("add", admin["user_id"]),
            ("role_update", admin["user_id"]),
            ("add", member["user_id"]),
            ("add", outsider["user_id"]),
            ("role_update", member["user_id"]),
            ("role_update", admin["user_id"]),
        ]
    )


async def test_remove_member(client: httpx.AsyncClient, db: Database) -> None:
    t = await _team_of_three(client)
    team, owner, admin, member = t["team"], t["owner"], t["admin"], t["member"]

    resp = await client.delete(
        f"/v1/teams/{team}/members/{admin['user_id']}", headers=bearer(admin["tok"])
    )
    assert_error(resp, 403, "forbidden")
    resp = await client.delete(
        f"/v1/teams/{team}/members/{member['user_id']}", headers=bearer(admin["tok"])
    )
    assert resp.status_code == 204, resp.text
    # The removed member's token stops working and they cannot switch back in.
    assert_error(await client.get("/v1/me", headers=bearer(member["tok"])), 401, "unauthorized")
    resp = await client.post(
        "/v1/auth/switch-team", json={"team_id": team}, headers=bearer(member["token"])
    )
    assert_error(resp, 403, "forbidden")
    # Not a member (any more, or never): 404.
    for uid in (member["user_id"], ids.USER.format(uuid.uuid4()), "usr-garbage"):
        resp = await client.delete(f"/v1/teams/{team}/members/{uid}", headers=bearer(owner["tok"]))
        assert_error(resp, 404, "not_found")
    # The owner removes an admin.
    resp = await client.delete(
        f"/v1/teams/{team}/members/{admin['user_id']}", headers=bearer(owner["tok"])
    )
    assert resp.status_code == 204, resp.text
    assert await roles(db, team) == {owner["user_id"]: "owner"}
    removed = [
        rid for action, (rid, _m) in await audit_actions(db, team, "member") if action == "remove"
    ]
    assert sorted(removed) == sorted([member["user_id"], admin["user_id"]])


async def test_leave(client: httpx.AsyncClient, db: Database) -> None:
    t = await _team_of_three(client)
    team, owner, admin, member = t["team"], t["owner"], t["admin"], t["member"]

    resp = await client.post(f"/v1/teams/{team}/leave", headers=bearer(owner["tok"]))
    assert_error(resp, 403, "forbidden")
    # Leaving needs the team to be the token's one (the member's signup token is elsewhere).
    resp = await client.post(f"/v1/teams/{team}/leave", headers=bearer(member["token"]))
    assert_error(resp, 403, "forbidden")
    for who in (member, admin):
        resp = await client.post(f"/v1/teams/{team}/leave", headers=bearer(who["tok"]))
        assert resp.status_code == 204, resp.text
        assert_error(await client.get("/v1/me", headers=bearer(who["tok"])), 401, "unauthorized")
        listed = await client.get("/v1/teams", headers=bearer(who["token"]))
        assert [x["id"] for x in listed.json()] == [who["team_id"]]
    assert await roles(db, team) == {owner["user_id"]: "owner"}
    left = [
        rid for action, (rid, _m) in await audit_actions(db, team, "member") if action == "leave"
    ]
    assert sorted(left) == sorted([member["user_id"], admin["user_id"]])
    # Someone who is not a member cannot leave.
    resp = await client.post(f"/v1/teams/{team}/leave", headers=bearer(member["token"]))
    assert_error(resp, 404, "not_found")
