"""The reconciler, as the app runs it (its loop, under leadership), over the fake host agent:
a capsule the agent no longer reports is stopped, one whose sandbox died is an error with the
agent's reason and is destroyed on the agent, an unreachable agent makes its capsules missing
and its host unreachable until it answers again, and each change is audited once."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.agents import call_timeouts
from wrenn_server.controlplane.db.models import Host, Sandbox
from wrenn_server.controlplane.jobs import reconciler
from wrenn_server.controlplane.jobs.reconciler import ABANDONED, VANISHED

from ..fakeagent import FakeHostAgent
from ..fakeagent.sandbox import PAUSED
from ..waiting import wait_for
from .conftest import Stack, StartApp
from .helpers import Account, make_capsule, new_account

INTERVAL = 0.1


async def _capsule(api: httpx.AsyncClient, account: Account, cid: str) -> dict[str, Any]:
    resp = await api.get(f"/v1/capsules/{cid}", headers=account.h)
    assert resp.status_code == 200, resp.text
    capsule: dict[str, Any] = resp.json()
    return capsule


async def _becomes(stack: Stack, account: Account, cid: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        capsule = await _capsule(stack.client, account, cid)
        return capsule if capsule["status"] == status else None

    return await wait_for(reached, 20, what=f"capsule {cid} {status}")


async def _events(stack: Stack, account: Account) -> list[tuple[str, str]]:
    resp = await stack.client.get(
        "/v1/audit-logs", params={"resource_type": "sandbox"}, headers=account.jwt
    )
    assert resp.status_code == 200, resp.text
    return [(e["action"], e["resource_id"]) for e in reversed(resp.json()["items"])]


async def _passes(agent: FakeHostAgent, n: int = 2) -> None:
    """Until the reconciler has asked the agent `n` more times."""
    passes = agent.calls.count("ListSandboxes")
    await wait_for(lambda: agent.calls.count("ListSandboxes") >= passes + n, what=f"{n} passes")


async def _host_status(stack: Stack) -> str:
    async with stack.db.sessionmaker() as session:
        return str(await session.scalar(select(Host.status)))


async def test_lost_and_dead_capsules(start_app: StartApp) -> None:
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        lost, dead, kept = [(await make_capsule(api, alice))["id"] for _ in range(3)]

        agent.forget(lost)
        agent.kill(dead, "out of memory")
        gone = await _becomes(stack, alice, lost, "stopped")
        assert gone["status_reason"] == VANISHED
        died = await _becomes(stack, alice, dead, "error")
        assert died["status_reason"] == "out of memory"
        # The dead capsule is destroyed on its agent (its disk freed); the other one untouched.
        await wait_for(lambda: dead not in agent.sandboxes, what="the dead capsule destroyed")
        assert list(agent.sandboxes) == [kept]
        assert (await _capsule(api, alice, kept))["status"] == "running"

        # Further passes change nothing and record nothing more.
        await _passes(agent, 3)
        events = await _events(stack, alice)
        # Both are found in one pass, so their records share a moment: order is not asserted.
        assert sorted(e for e in events if e[0] != "create") == [("died", dead), ("stopped", lost)]
        # A destroy of a capsule in error asks the agent nothing.
        destroyed = await api.delete(f"/v1/capsules/{dead}", headers=alice.h)
        assert destroyed.status_code == 204
        assert agent.calls.count("DestroySandbox") == 1


async def test_an_unreachable_agent_makes_capsules_missing_until_it_answers(
    start_app: StartApp,
) -> None:
    # A host is unreachable once nothing was heard from it for host_down_after_sec.
    async with start_app(reconcile_interval_sec=INTERVAL, host_down_after_sec=2) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        running = (await make_capsule(api, alice))["id"]
        paused = (await make_capsule(api, alice))["id"]
        assert (await api.post(f"/v1/capsules/{paused}/pause", headers=alice.h)).status_code == 200

        await stack.server.stop()
        await _becomes(stack, alice, running, "missing")
        await _becomes(stack, alice, paused, "missing")
        await wait_for(lambda: _is_unreachable(stack), what="the host unreachable")
        refused = await api.post(
            f"/v1/capsules/{running}/exec", json={"cmd": "true"}, headers=alice.h
        )
        assert refused.status_code == 409, refused.text

        await stack.server.start()
        await _becomes(stack, alice, running, "running")
        await _becomes(stack, alice, paused, "paused")
        assert await _host_status(stack) == "online"
        assert (agent.sandboxes[running].status, agent.sandboxes[paused].status) == (
            "running",
            "paused",
        )
        events = await _events(stack, alice)
        # (Each time: a pass slower than host_down_after_sec under load marks the host again.)
        missing = {cid for action, cid in events if action == "marked_missing"}
        assert missing == {running, paused}
        # Coming back is not an auto-pause.
        since_lost = events[[action for action, _ in events].index("marked_missing") :]
        assert not [e for e in since_lost if e[0] == "auto_pause"]
        ran = await api.post(f"/v1/capsules/{running}/exec", json={"cmd": "true"}, headers=alice.h)
        assert ran.status_code == 200, ran.text


async def _is_unreachable(stack: Stack) -> bool:
    return await _host_status(stack) == "unreachable"


async def test_the_reconciler_records_what_the_agent_reports_of_its_host(
    start_app: StartApp,
) -> None:
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        stack.agent.resources.cpu_count = 3
        stack.agent.resources.memory_mb = 6000

        async def recorded() -> bool:
            async with stack.db.sessionmaker() as session:
                host = await session.scalar(select(Host))
            return host is not None and (host.cpu_cores, host.memory_mb) == (3, 6000)

        await wait_for(recorded, what="the host's resources recorded")
        # Placement now counts them: a capsule larger than the host is refused.
        alice = await new_account(stack.client)
        resp = await stack.client.post("/v1/capsules", json={"vcpus": 4}, headers=alice.h)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "no_hosts_available"


async def test_a_pass_during_a_pause_does_not_record_an_auto_pause(start_app: StartApp) -> None:
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        cid = (await make_capsule(api, alice))["id"]
        # The agent has paused the capsule but its answer is slow: the row still says running.
        reply = agent.faults.hold_reply("PauseSandbox")
        pause = asyncio.create_task(api.post(f"/v1/capsules/{cid}/pause", headers=alice.h))
        try:
            await wait_for(reply.arrived.is_set, what="the agent paused")
            await _passes(agent)
        finally:
            reply.release()
        assert (await pause).status_code == 200
        assert [action for action, _ in await _events(stack, alice)] == ["create", "pause"]


async def test_a_pause_whose_control_plane_died_is_recorded_once_it_settles(
    start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control plane died while its agent paused a capsule (the row still says running,
    written moments ago; the agent reports it paused, not by its reaper): passes leave it to
    the call only until the pause has been reported for SETTLE_GRACE, not for the whole
    pause grace (minutes of a capsule listed running that refuses every command)."""
    monkeypatch.setattr(reconciler, "SETTLE_GRACE", dt.timedelta(seconds=1))
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        cid = (await make_capsule(api, alice))["id"]
        await _passes(agent)
        sandbox = agent.get(cid)
        sandbox.status, sandbox.auto_paused = PAUSED, False  # the call's pause, done
        async with stack.db.sessionmaker() as session, session.begin():
            await session.execute(
                update(Sandbox)
                .where(Sandbox.id == ids.SANDBOX.parse(cid))
                .values(last_updated=dt.datetime.now(dt.UTC))
            )
        await _passes(agent)
        assert (await _capsule(api, alice, cid))["status"] == "running"  # the call's, for now
        await _becomes(stack, alice, cid, "paused")


async def test_a_pass_during_a_resume_leaves_it_to_the_call(start_app: StartApp) -> None:
    """The agent reports a capsule running once its sandbox is restored, before the resume
    call answers (the real agent then still waits for envd, and pauses it again if envd never
    answers): passes meanwhile leave the row `starting`, so a resume that fails cannot leave
    it running over a paused capsule."""
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        cid = (await make_capsule(api, alice))["id"]
        assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
        reply = agent.faults.hold_reply("ResumeSandbox")
        resume = asyncio.create_task(api.post(f"/v1/capsules/{cid}/resume", headers=alice.h))
        try:
            await wait_for(reply.arrived.is_set, what="the agent resumed")
            await _passes(agent)
            assert (await _capsule(api, alice, cid))["status"] == "starting"
        finally:
            reply.release()
        assert (await resume).status_code == 200
        assert (await _capsule(api, alice, cid))["status"] == "running"


async def test_a_create_abandoned_by_a_dead_control_plane_becomes_an_error(
    start_app: StartApp,
) -> None:
    """A row left `starting` by a create whose control plane died (the agent dropped the
    capsule with the call) is marked error with the reason once it is older than any create;
    a create under way (younger) is left to its call."""
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        abandoned = (await make_capsule(api, alice))["id"]
        agent.forget(abandoned)
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=11)
        async with stack.db.sessionmaker() as session, session.begin():
            await session.execute(
                update(Sandbox)
                .where(Sandbox.id == ids.SANDBOX.parse(abandoned))
                .values(status="starting", last_updated=long_ago)
            )
        hold = agent.faults.hold("CreateSandbox")
        creating = asyncio.create_task(api.post("/v1/capsules", json={}, headers=alice.h))
        try:
            await wait_for(hold.arrived.is_set, what="a create reaching the agent")
            errored = await _becomes(stack, alice, abandoned, "error")
            assert errored["status_reason"] == ABANDONED
            await _passes(agent)
            assert (await _capsule(api, alice, abandoned))["status"] == "error"
            listed = (await api.get("/v1/capsules", headers=alice.h)).json()
            assert [c["status"] for c in listed] == ["starting"]  # the create under way
        finally:
            hold.release()
        assert (await creating).status_code == 201
        assert ("died", abandoned) in await _events(stack, alice)


async def test_a_pass_during_a_snapshot_leaves_the_capsule_paused(start_app: StartApp) -> None:
    """The row reads paused from the snapshot's start while the agent still reports the
    capsule running: a pass then must not make it running (it would stay so, paused on the
    agent, every command refused)."""
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        cid = (await make_capsule(api, alice))["id"]
        hold = agent.faults.hold("CreateSnapshot")
        body = {"sandbox_id": cid, "name": "during-passes"}
        snapshot = asyncio.create_task(api.post("/v1/snapshots", json=body, headers=alice.h))
        try:
            await wait_for(hold.arrived.is_set, what="the snapshot reaching the agent")
            assert agent.sandboxes[cid].status == "running"
            await _passes(agent)
        finally:
            hold.release()
        assert (await snapshot).status_code == 201
        assert agent.sandboxes[cid].status == "paused"
        assert (await _capsule(api, alice, cid))["status"] == "paused"
        resumed = await api.post(f"/v1/capsules/{cid}/resume", headers=alice.h)
        assert resumed.status_code == 200, resumed.text


async def _age_row(stack: Stack, cid: str, seconds: float) -> None:
    """Make the capsule's row look written `seconds` ago (when its call began)."""
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    async with stack.db.sessionmaker() as session, session.begin():
        await session.execute(
            update(Sandbox).where(Sandbox.id == ids.SANDBOX.parse(cid)).values(last_updated=then)
        )


async def test_a_long_snapshot_is_left_to_its_call_as_long_as_the_call_waits(
    start_app: StartApp,
) -> None:
    """A snapshot that has been under way for longer than a pause or resume may take (but not
    longer than the snapshot call waits for its agent) keeps its capsule paused through the
    reconciler's passes; once older than any snapshot call, the agent's word wins."""
    assert call_timeouts.SNAPSHOT_TIMEOUT > call_timeouts.PAUSE_TIMEOUT + 60
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        cid = (await make_capsule(api, alice))["id"]
        hold = agent.faults.hold("CreateSnapshot")
        body = {"sandbox_id": cid, "name": "long-one"}
        snapshot = asyncio.create_task(api.post("/v1/snapshots", json=body, headers=alice.h))
        try:
            await wait_for(hold.arrived.is_set, what="the snapshot reaching the agent")
            # Under way for longer than any pause or resume call waits, still within its own.
            await _age_row(stack, cid, call_timeouts.SNAPSHOT_TIMEOUT - 60)
            assert agent.sandboxes[cid].status == "running"
            await _passes(agent, 3)
            assert (await _capsule(api, alice, cid))["status"] == "paused"
            # Older than any snapshot call: the call is gone, and the agent says running.
            await _age_row(stack, cid, call_timeouts.SNAPSHOT_TIMEOUT + 60)
            await _becomes(stack, alice, cid, "running")
        finally:
            hold.release()
        await snapshot
