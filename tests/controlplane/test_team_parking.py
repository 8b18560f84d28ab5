"""A team's parking policy through `/v1/teams/{id}/parking`: read by any member, set by the owner
or an admin only (a member 403, another team 404, an API key 401), validated, stored and
audited with what changed. What it does to capsules is tests/orchestration/test_parking.py's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import Team
from wrenn_server.controlplane.db.session import Database, transaction

from .helpers import assert_error, bearer, signup
from .team_helpers import add_member, audit_actions, switch

OFF = {"idle_sec": 0, "auto_resume": False}


async def _stored(db: Database, team_id: str) -> tuple[int, bool]:
    async with db.sessionmaker() as session, transaction(session):
        team = await session.get(Team, ids.TEAM.parse(team_id))
        assert team is not None
        return team.park_after_sec, team.park_resume


async def test_owner_and_admin_set_it_members_read_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    owner, admin, member = await signup(client), await signup(client), await signup(client)
    team = owner["team_id"]
    url = f"/v1/teams/{team}/parking"
    await add_member(client, owner["token"], team, admin["email"], "admin")
    await add_member(client, owner["token"], team, member["email"])
    admin_h = bearer(await switch(client, admin["token"], team))
    member_h = bearer(await switch(client, member["token"], team))

    assert (await client.get(url, headers=member_h)).json() == OFF
    policy = {"idle_sec": 300, "auto_resume": True}
    assert_error(await client.put(url, json=policy, headers=member_h), 403, "forbidden")
    assert await _stored(db, team) == (0, False)

    resp = await client.put(url, json=policy, headers=bearer(owner["token"]))
    assert resp.status_code == 200 and resp.json() == policy
    assert (await client.get(url, headers=member_h)).json() == policy
    resp = await client.put(url, json={"idle_sec": 0, "auto_resume": True}, headers=admin_h)
    assert resp.status_code == 200, resp.text
    assert await _stored(db, team) == (0, True)
    # The same policy again changes nothing and is not audited twice.
    resp = await client.put(url, json={"idle_sec": 0, "auto_resume": True}, headers=admin_h)
    assert resp.status_code == 200, resp.text

    changes = [meta for action, (_rid, meta) in await audit_actions(db, team, "team")]
    changes = [m for m in changes if m and "new" in m]
    assert changes == [
        {"old": OFF, "new": policy},
        {"old": policy, "new": {"idle_sec": 0, "auto_resume": True}},
    ]


async def test_another_team_and_api_keys_cannot(client: httpx.AsyncClient, db: Database) -> None:
    owner, outsider = await signup(client), await signup(client)
    url = f"/v1/teams/{owner['team_id']}/parking"
    policy = {"idle_sec": 60, "auto_resume": True}
    for method in ("get", "put"):
        resp = await client.request(method, url, json=policy, headers=bearer(outsider["token"]))
        assert_error(resp, 404, "not_found")
    resp = await client.post("/v1/api-keys", json={"name": "k"}, headers=bearer(owner["token"]))
    key = {"X-API-Key": resp.json()["key"]}
    assert_error(await client.put(url, json=policy, headers=key), 401, "unauthorized")
    assert await _stored(db, owner["team_id"]) == (0, False)


@pytest.mark.parametrize(
    "body",
    [
        {"idle_sec": -1, "auto_resume": False},
        {"idle_sec": 30 * 24 * 3600 + 1, "auto_resume": False},
        {"idle_sec": "soon", "auto_resume": False},
        {"idle_sec": 1.5, "auto_resume": False},
        {"idle_sec": 60},
        {"auto_resume": True},
        {"idle_sec": 60, "auto_resume": "maybe"},
        [],
    ],
)
async def test_bad_policies_are_refused(client: httpx.AsyncClient, db: Database, body: Any) -> None:
    owner = await signup(client)
    url = f"/v1/teams/{owner['team_id']}/parking"
    resp = await client.put(url, json=body, headers=bearer(owner["token"]))
    assert_error(resp, 400, "invalid_request")
    assert await _stored(db, owner["team_id"]) == (0, False)
