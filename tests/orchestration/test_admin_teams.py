"""A platform admin deletes a team over the fake host agent: its capsules are destroyed on the
agent first (one whose host cannot be reached is recorded stopped, and the reconciler destroys it
once the host is back), its snapshot templates are deleted there, its API keys and its members'
sessions in it stop working, and the team is listed as deleted. Another team is untouched."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import AuditLog, Template

from ..controlplane.helpers import assert_error
from ..controlplane.team_helpers import add_member, login, switch
from ..waiting import wait_for
from .conftest import Stack, StartApp
from .helpers import Account, capsule_status, make_capsule, new_account, new_admin


async def _admin_event(stack: Stack, team_id: str) -> dict[str, Any]:
    async with stack.db.sessionmaker() as session:
        events = list(
            await session.scalars(
                select(AuditLog).where(
                    AuditLog.resource_id == team_id,
                    AuditLog.action == "delete",
                    AuditLog.scope == "admin",
                )
            )
        )
    assert len(events) == 1
    metadata: dict[str, Any] = events[0].metadata_
    return metadata


async def _listed(stack: Stack, root: Account, team_id: str) -> dict[str, Any]:
    resp = await stack.client.get("/v1/admin/teams", headers=root.jwt)
    assert resp.status_code == 200, resp.text
    team: dict[str, Any] = next(t for t in resp.json()["teams"] if t["id"] == team_id)
    return team


async def test_deleting_a_team_destroys_its_capsules_first(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    root = await new_admin(api, stack.db)
    alice = await new_account(api)
    bob = await new_account(api)
    running = (await make_capsule(api, alice))["id"]
    paused = (await make_capsule(api, alice))["id"]
    assert (await api.post(f"/v1/capsules/{paused}/pause", headers=alice.h)).status_code == 200
    source = (await make_capsule(api, alice))["id"]
    snap = await api.post(
        "/v1/snapshots", json={"sandbox_id": source, "name": "alice-snap"}, headers=alice.h
    )
    assert snap.status_code == 201, snap.text
    async with stack.db.sessionmaker() as session:
        stored = await session.scalar(
            select(Template.storage_name).where(Template.name == "alice-snap")
        )
    assert stored in agent.templates
    bobs = (await make_capsule(api, bob))["id"]
    # Bob is also a member of Alice's team, and acts in it.
    await add_member(api, alice.token, alice.team_id, bob.email)
    bob_in_alice = await switch(api, bob.token, alice.team_id)
    assert (
        await api.get("/v1/capsules", headers={"Authorization": f"Bearer {bob_in_alice}"})
    ).status_code == 200
    live_before = {cid for cid in agent.sandboxes if cid != bobs}
    assert {running, paused} <= live_before
    assert (await _listed(stack, root, alice.team_id))["active_sandbox_count"] == len(live_before)

    # Not for the team's own owner, nor anyone else but a platform admin.
    for headers in (alice.jwt, alice.h, bob.jwt, {}):
        resp = await api.delete(f"/v1/admin/teams/{alice.team_id}", headers=headers)
        assert resp.status_code in (401, 403), resp.text
    assert set(agent.sandboxes) == live_before | {bobs}

    resp = await api.delete(f"/v1/admin/teams/{alice.team_id}", headers=root.jwt)
    assert resp.status_code == 204, resp.text

    # The capsules are gone from the agent (Bob's own stays), and recorded stopped.
    assert set(agent.sandboxes) == {bobs}
    assert agent.calls.count("DestroySandbox") == len(live_before)
    assert stored not in agent.templates
    async with stack.db.sessionmaker() as session:
        assert await session.scalar(select(Template).where(Template.name == "alice-snap")) is None
    assert await capsule_status(api, bob, bobs) == "running"
    # Its key, the owner's session and the member's session in it stop working.
    assert_error(await api.get("/v1/capsules", headers=alice.h), 401, "unauthorized")
    assert_error(await api.get("/v1/capsules", headers=alice.jwt), 401, "unauthorized")
    gone = {"Authorization": f"Bearer {bob_in_alice}"}
    assert_error(await api.get("/v1/capsules", headers=gone), 401, "unauthorized")
    # Bob still works in his own team; Alice signs in to no team.
    assert (await api.get("/v1/capsules", headers=bob.h)).status_code == 200
    assert not (await login(api, alice.email))["team_id"]

    listed = await _listed(stack, root, alice.team_id)
    assert listed["deleted_at"] is not None
    assert (listed["member_count"], listed["active_sandbox_count"]) == (0, 0)
    event = await _admin_event(stack, alice.team_id)
    assert event["capsules_destroyed"] == len(live_before)
    assert event["capsules_host_unreachable"] == 0
    assert (event["templates_deleted"], event["templates_left"]) == (1, [])
    assert event["api_keys_revoked"] == 1 and event["members_removed"] == 2

    # Once deleted it is not there; the platform team cannot be deleted.
    again = await api.delete(f"/v1/admin/teams/{alice.team_id}", headers=root.jwt)
    assert_error(again, 404, "not_found")
    platform = ids.TEAM.format(ids.PLATFORM_TEAM_ID)
    assert_error(
        await api.delete(f"/v1/admin/teams/{platform}", headers=root.jwt), 403, "forbidden"
    )
    assert_error(
        await api.delete("/v1/admin/teams/team-x", headers=root.jwt), 400, "invalid_request"
    )


async def test_a_capsule_on_an_unreachable_host_is_stopped_and_reaped_later(
    start_app: StartApp,
) -> None:
    async with start_app(reconcile_interval_sec=0.1) as stack:
        api, agent = stack.client, stack.agent
        root = await new_admin(api, stack.db)
        alice = await new_account(api)
        cid = (await make_capsule(api, alice))["id"]
        agent.faults.unavailable = True
        resp = await api.delete(f"/v1/admin/teams/{alice.team_id}", headers=root.jwt)
        assert resp.status_code == 204, resp.text
        assert cid in agent.sandboxes
        event = await _admin_event(stack, alice.team_id)
        assert (event["capsules_destroyed"], event["capsules_host_unreachable"]) == (1, 1)
        resp = await api.get(
            "/v1/admin/capsules", params={"team_id": alice.team_id}, headers=root.jwt
        )
        assert [(c["id"], c["status"]) for c in resp.json()] == [(cid, "stopped")]
        # The host is back: the reconciler destroys what its row says has ended.
        agent.faults.unavailable = False
        await wait_for(lambda: cid not in agent.sandboxes, what="the capsule destroyed")
