"""A team's parking policy over the fake host agent: a capsule created without a timeout or
auto_resume of its own gets the team's (sent to its agent, shown by the API), an explicit value
is kept, and a capsule its agent's reaper paused is resumed by the next REST call into it (exec,
files, processes, a command's stream, the E2B envd protocol), once for calls arriving together;
listing its ports only looks and does not."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from ..controlplane.helpers import assert_error
from ..waiting import wait_for
from .conftest import Stack, StartApp
from .helpers import Account, capsule_status, make_capsule, new_account
from .test_streams import collect, open_ws

ENVD = {"E2b-Sandbox-Port": "49983", "Content-Type": "application/json"}


async def _set_parking(api: httpx.AsyncClient, account: Account, **policy: Any) -> None:
    resp = await api.put(f"/v1/teams/{account.team_id}/parking", json=policy, headers=account.jwt)
    assert resp.status_code == 200, resp.text
    assert resp.json() == policy


async def test_the_teams_policy_fills_in_what_a_create_left_out(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    # Off by default: nothing changes for a team that never set it.
    resp = await api.get(f"/v1/teams/{alice.team_id}/parking", headers=alice.jwt)
    assert resp.json() == {"idle_sec": 0, "auto_resume": False}
    plain = await make_capsule(api, alice)
    assert (plain["timeout_sec"], plain["auto_resume"]) == (0, False)

    await _set_parking(api, alice, idle_sec=600, auto_resume=True)
    parked = await make_capsule(api, alice)  # as the published SDK sends it: no timeout_sec
    assert (parked["timeout_sec"], parked["auto_resume"]) == (600, True)
    assert agent.sandboxes[parked["id"]].timeout_sec == 600
    # What the creator sent is theirs, `timeout_sec: 0` (never pause) included.
    own = await make_capsule(api, alice, timeout_sec=0, auto_resume=False)
    assert (own["timeout_sec"], own["auto_resume"]) == (0, False)
    assert agent.sandboxes[own["id"]].timeout_sec == 0
    short = await make_capsule(api, alice, timeout_sec=30)
    assert (short["timeout_sec"], short["auto_resume"]) == (30, True)

    # Another team's policy is its own; a change applies to capsules created after it.
    bob = await new_account(api)
    assert (await make_capsule(api, bob))["timeout_sec"] == 0
    await _set_parking(api, alice, idle_sec=0, auto_resume=False)
    resp = await api.get(f"/v1/capsules/{parked['id']}", headers=alice.h)
    assert (resp.json()["timeout_sec"], resp.json()["auto_resume"]) == (600, True)
    assert (await make_capsule(api, alice))["timeout_sec"] == 0


async def _parked_by_the_reaper(stack: Stack, account: Account) -> str:
    """A capsule of the account's team (policy: park after 60 s, resume) its agent's reaper
    paused, as the control plane's reconciler recorded it."""
    api, agent = stack.client, stack.agent
    await _set_parking(api, account, idle_sec=60, auto_resume=True)
    cid = str((await make_capsule(api, account))["id"])
    agent.sandboxes[cid].last_active_at = time.time() - 61
    assert agent.reap_idle() == [cid]

    async def recorded() -> bool:
        return await capsule_status(api, account, cid) == "paused"

    await wait_for(recorded, what="the reconciler records the auto-pause")
    return cid


async def test_a_parked_capsule_resumes_on_the_next_rest_call(start_app: StartApp) -> None:
    async with start_app(reconcile_interval_sec=0.1) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        cid = await _parked_by_the_reaper(stack, alice)
        # Another team's key neither reaches nor wakes it.
        mallory = await new_account(api)
        resp = await api.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=mallory.h)
        assert_error(resp, 404, "not_found")
        assert "ResumeSandbox" not in agent.calls

        # Listing its ports only looks (a dashboard polls it): no resume.
        resp = await api.get(f"/v1/capsules/{cid}/ports", headers=alice.h)
        assert_error(resp, 409, "invalid_state")
        assert "ResumeSandbox" not in agent.calls

        hold = agent.faults.hold("ResumeSandbox")
        calls = [
            api.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=alice.h),
            api.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=alice.h),
            api.post(f"/v1/capsules/{cid}/files/list", json={"path": "/"}, headers=alice.h),
            api.get(f"/v1/capsules/{cid}/processes", headers=alice.h),
        ]
        tasks = [asyncio.create_task(call) for call in calls]
        await asyncio.wait_for(hold.arrived.wait(), 10)
        assert not any(t.done() for t in tasks)  # they wait for the capsule
        hold.release()
        answers = await asyncio.gather(*tasks)
        assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
        assert agent.calls.count("ResumeSandbox") == 1
        assert await capsule_status(api, alice, cid) == "running"
        # The platform resumed it, acting on the capsule's setting.
        resp = await api.get("/v1/audit-logs", headers=alice.jwt)
        resumes = [e for e in resp.json()["items"] if e["action"] == "resume"]
        assert [e["actor"]["type"] for e in resumes] == ["system"]

        # The E2B envd protocol wakes it too.
        assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
        resp = await api.post(
            "/process.Process/List", json={}, headers={**ENVD, "E2b-Sandbox-Id": cid, **alice.h}
        )
        assert resp.status_code == 200, resp.text
        assert agent.calls.count("ResumeSandbox") == 2

        # And a command's WebSocket stream.
        assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
        async with open_ws(stack, f"/v1/capsules/{cid}/exec/stream", alice.h) as ws:
            await ws.send_json({"type": "start", "cmd": "echo awake"})
            _msgs, out, _err = await collect(ws)
        assert out == "awake\n"
        assert agent.calls.count("ResumeSandbox") == 3


async def test_without_auto_resume_a_paused_capsule_is_a_conflict(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    await _set_parking(api, alice, idle_sec=60, auto_resume=False)
    cid = (await make_capsule(api, alice))["id"]
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    resp = await api.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=alice.h)
    body = assert_error(resp, 409, "invalid_state")
    assert "paused" in body["message"]
    resp = await api.post(f"/v1/capsules/{cid}/files/list", json={"path": "/"}, headers=alice.h)
    assert_error(resp, 409, "invalid_state")
    assert "ResumeSandbox" not in agent.calls
    assert await capsule_status(api, alice, cid) == "paused"
