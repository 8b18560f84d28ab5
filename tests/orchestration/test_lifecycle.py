"""Capsule lifecycle through the REST API over the fake host agent: what the control plane asks
the agent (and only that), what it records, what it refuses before the agent is asked, and that
an agent failure leaves nothing half-made behind."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import AuditLog, Sandbox

from ..controlplane.helpers import assert_error
from ..waiting import wait_for
from .conftest import Stack, StartApp
from .helpers import capsule_status, make_capsule, new_account


async def test_create_get_list_pause_resume_destroy(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    capsule = await make_capsule(api, alice, vcpus=2, memory_mb=1024, timeout_sec=0)
    cid = capsule["id"]
    assert agent.calls == ["CreateSandbox"]
    held = agent.sandboxes[cid]
    assert (held.status, held.vcpus, held.memory_mb, held.template) == (
        "running",
        2,
        1024,
        "minimal",
    )
    assert capsule["host_ip"] == "127.0.0.1"

    got = await api.get(f"/v1/capsules/{cid}", headers=alice.h)
    assert got.status_code == 200 and got.json()["status"] == "running"
    listed = await api.get("/v1/capsules", headers=alice.h)
    assert [c["id"] for c in listed.json()] == [cid]

    paused = await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert held.status == "paused"
    # The wrong state is refused by the control plane; the agent is not asked.
    calls = len(agent.calls)
    assert_error(await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h), 409, "invalid_state")
    exec_paused = await api.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=alice.h)
    assert_error(exec_paused, 409, "invalid_state")
    assert len(agent.calls) == calls

    resumed = await api.post(f"/v1/capsules/{cid}/resume", headers=alice.h)
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    assert held.status == "running"
    ping = await api.post(f"/v1/capsules/{cid}/ping", headers=alice.h)
    assert ping.status_code == 204

    gone = await api.delete(f"/v1/capsules/{cid}", headers=alice.h)
    assert gone.status_code == 204
    assert agent.sandboxes == {}
    assert await capsule_status(api, alice, cid) == "stopped"
    # Destroying a stopped capsule is a no-op: the agent is not asked again.
    assert (await api.delete(f"/v1/capsules/{cid}", headers=alice.h)).status_code == 204
    lifecycle = [c for c in agent.calls if c.endswith("Sandbox")]
    assert lifecycle == [
        "CreateSandbox",
        "PauseSandbox",
        "ResumeSandbox",
        "PingSandbox",
        "DestroySandbox",
    ]


async def test_other_teams_and_unknown_capsules_are_not_found(stack: Stack) -> None:
    api = stack.client
    alice, bob = await new_account(api), await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    for path in (f"/v1/capsules/{cid}", "/v1/capsules/sb-00000000-0000-0000-0000-000000000000"):
        assert_error(await api.get(path, headers=bob.h), 404, "not_found")
    assert_error(await api.delete(f"/v1/capsules/{cid}", headers=bob.h), 404, "not_found")
    assert stack.agent.sandboxes[cid].status == "running"
    assert stack.agent.calls == ["CreateSandbox"]


async def test_bad_template_and_quota_are_refused_before_the_agent(start_app: StartApp) -> None:
    async with start_app(quota_max_capsules=1) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        unknown = await api.post("/v1/capsules", json={"template": "nope"}, headers=alice.h)
        assert_error(unknown, 400, "invalid_request")
        await make_capsule(api, alice)
        second = await api.post("/v1/capsules", json={}, headers=alice.h)
        assert_error(second, 403, "quota_exceeded")
        assert agent.calls == ["CreateSandbox"]
        assert len(agent.sandboxes) == 1


async def test_failed_create_leaves_nothing_behind(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    cases = [
        (grpc.StatusCode.UNAVAILABLE, 503, "host_unavailable"),
        (grpc.StatusCode.INTERNAL, 502, "agent_error"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 503, "no_hosts_available"),
        # What the agent may not find when a capsule is new is its template's files.
        (grpc.StatusCode.NOT_FOUND, 400, "invalid_request"),
    ]
    for code, status, error in cases:
        agent.faults.fail("CreateSandbox", code, "the host says no")
        resp = await api.post("/v1/capsules", json={}, headers=alice.h)
        body = assert_error(resp, status, error)
        if error not in ("agent_error", "host_unavailable"):
            assert body["message"] == "the host says no"
        else:
            assert "the host says no" not in body["message"]
    assert agent.sandboxes == {}
    assert (await api.get("/v1/capsules", headers=alice.h)).json() == []
    async with stack.db.sessionmaker() as session:
        assert list(await session.scalars(select(Sandbox))) == []
        capsule_events = select(AuditLog).where(AuditLog.resource_type == "sandbox")
        assert list(await session.scalars(capsule_events)) == []
    # The quota slot was given back: a create works again.
    await make_capsule(api, alice)


async def test_a_slow_create_holds_its_slot_as_starting(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    hold = agent.faults.hold("CreateSandbox")
    create = asyncio.create_task(api.post("/v1/capsules", json={}, headers=alice.h))
    try:
        await wait_for(hold.arrived.is_set, what="the create reaching the agent")
        listed = (await api.get("/v1/capsules", headers=alice.h)).json()
        assert [c["status"] for c in listed] == ["starting"]
    finally:
        hold.release()
    made = await create
    assert made.status_code == 201 and made.json()["status"] == "running"


async def test_a_failed_resume_leaves_the_capsule_paused(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    # The host out of capsule addresses (or memory): a 503 saying so, the capsule still paused.
    no_address = "the host has no free capsule network address"
    agent.faults.fail("ResumeSandbox", grpc.StatusCode.RESOURCE_EXHAUSTED, no_address)
    resp = await api.post(f"/v1/capsules/{cid}/resume", headers=alice.h)
    assert assert_error(resp, 503, "no_hosts_available")["message"] == no_address
    assert await capsule_status(api, alice, cid) == "paused"
    agent.faults.fail("ResumeSandbox", grpc.StatusCode.UNAVAILABLE)
    resp = await api.post(f"/v1/capsules/{cid}/resume", headers=alice.h)
    assert_error(resp, 503, "host_unavailable")
    assert await capsule_status(api, alice, cid) == "paused"
    # Its checkpoint did not restore (twice, on the agent): the agent's own words on what to do.
    not_restored = "the capsule could not be restored from its saved state; it is still paused"
    agent.faults.fail("ResumeSandbox", grpc.StatusCode.DATA_LOSS, not_restored)
    resp = await api.post(f"/v1/capsules/{cid}/resume", headers=alice.h)
    assert assert_error(resp, 502, "agent_error")["message"] == not_restored
    assert await capsule_status(api, alice, cid) == "paused"
    assert agent.sandboxes[cid].status == "paused"
    resumed = await api.post(f"/v1/capsules/{cid}/resume", headers=alice.h)
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"


async def test_resumes_arriving_together_resume_once(stack: Stack) -> None:
    """One resume reaches the agent; the others are refused (409) instead of failing on the
    agent and putting the capsule back to paused under the one that resumed it."""
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    before = agent.calls.count("ResumeSandbox")
    answers = await asyncio.gather(
        *(api.post(f"/v1/capsules/{cid}/resume", headers=alice.h) for _ in range(4))
    )
    assert sorted(r.status_code for r in answers).count(200) == 1
    for refused in (r for r in answers if r.status_code != 200):
        assert_error(refused, 409, "invalid_state")
    assert agent.calls.count("ResumeSandbox") - before == 1
    assert await capsule_status(api, alice, cid) == "running"


async def test_the_list_leaves_ended_capsules_out_unless_asked(stack: Stack) -> None:
    api = stack.client
    alice = await new_account(api)
    ended = (await make_capsule(api, alice))["id"]
    paused = (await make_capsule(api, alice))["id"]
    running = (await make_capsule(api, alice))["id"]
    assert (await api.delete(f"/v1/capsules/{ended}", headers=alice.h)).status_code == 204
    assert (await api.post(f"/v1/capsules/{paused}/pause", headers=alice.h)).status_code == 200
    errored = (await make_capsule(api, alice))["id"]
    async with stack.db.sessionmaker() as session, session.begin():
        row = await session.get(Sandbox, ids.SANDBOX.parse(errored))
        assert row is not None
        row.status = "error"

    async def listed(params: Any = None) -> list[str]:
        resp = await api.get("/v1/capsules", params=params, headers=alice.h)
        assert resp.status_code == 200, resp.text
        return [c["id"] for c in resp.json()]

    # Newest first, as before; the stopped and the errored one only when asked for.
    assert await listed() == [running, paused]
    assert await listed({"status": ""}) == [running, paused]
    assert await listed({"status": "stopped"}) == [ended]
    assert await listed({"status": "error,stopped"}) == [errored, ended]
    assert await listed([("status", "running"), ("status", "stopped, paused")]) == [
        running,
        paused,
        ended,
    ]
    resp = await api.get("/v1/capsules", params={"status": "running,gone"}, headers=alice.h)
    assert "gone" in assert_error(resp, 400, "invalid_request")["message"]
    # A capsule that ended is still there by its id.
    assert await capsule_status(api, alice, ended) == "stopped"


async def test_destroy_of_a_capsule_the_agent_lost_still_stops_it(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    agent.forget(cid)
    assert (await api.delete(f"/v1/capsules/{cid}", headers=alice.h)).status_code == 204
    assert await capsule_status(api, alice, cid) == "stopped"


async def test_an_unreachable_agent_fails_calls_cleanly(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    agent.faults.unavailable = True
    for resp in (
        await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h),
        await api.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=alice.h),
        await api.post("/v1/capsules", json={}, headers=alice.h),
    ):
        assert_error(resp, 503, "host_unavailable")
    assert await capsule_status(api, alice, cid) == "running"
    assert [c["id"] for c in (await api.get("/v1/capsules", headers=alice.h)).json()] == [cid]


async def test_idle_timeout_pauses_and_the_reconciler_records_it(start_app: StartApp) -> None:
    async with start_app(reconcile_interval_sec=0.1) as stack:
        api, agent = stack.client, stack.agent
        alice = await new_account(api)
        cid = (await make_capsule(api, alice, timeout_sec=1))["id"]
        assert agent.sandboxes[cid].timeout_sec == 1

        async def paused() -> bool:
            return await capsule_status(api, alice, cid) == "paused"

        await wait_for(paused, what="the idle capsule paused")
        assert agent.sandboxes[cid].auto_paused
        events = await api.get(
            "/v1/audit-logs", params={"resource_type": "sandbox"}, headers=alice.jwt
        )
        assert [e["action"] for e in events.json()["items"]] == ["auto_pause", "create"]
        # Resuming keeps the timeout: the agent is told it again.
        resumed = await api.post(f"/v1/capsules/{cid}/resume", headers=alice.h)
        assert resumed.status_code == 200
        assert agent.sandboxes[cid].timeout_sec == 1 and not agent.sandboxes[cid].auto_paused
