"""Each repair the reconciler makes of what a crash (of a host agent, a control plane, a
sandbox) left behind is in the audit log as the system's, saying what the capsule was, what was
found and what was done: a record whose capsule its host no longer has, a dead sandbox, a
sandbox alive on its host with no record of it, one alive whose record says it ended, and the
two ends of a pause an agent restart interrupted (finished from its whole checkpoint, or its
half-written checkpoint discarded with the sandbox gone)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from sqlalchemy import update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import Sandbox
from wrenn_server.controlplane.jobs.reconciler import VANISHED

from ..waiting import wait_for
from .conftest import Stack, StartApp
from .helpers import Account, make_capsule, new_account, new_admin

INTERVAL = 0.1
# A pause its agent did not see to the end (GVisorRuntime._recover_pause), as the agent says it.
INTERRUPTED = (
    "its sandbox stopped during a pause that the host agent did not finish (the agent restarted)"
)


async def _audited(
    api: httpx.AsyncClient, account: Account, action: str, resource: str, path: str
) -> dict[str, Any] | None:
    resp = await api.get(path, params={"resource_type": "sandbox"}, headers=account.jwt)
    assert resp.status_code == 200, resp.text
    for entry in resp.json()["items"]:
        if entry["action"] == action and entry["resource_id"] == resource:
            found: dict[str, Any] = entry
            return found
    return None


async def _entry(
    stack: Stack, account: Account, action: str, resource: str, path: str = "/v1/audit-logs"
) -> dict[str, Any]:
    async def written() -> dict[str, Any] | None:
        return await _audited(stack.client, account, action, resource, path)

    entry: dict[str, Any] = await wait_for(written, 20, what=f"{action} of {resource} audited")
    assert entry["actor"]["type"] == "system"
    return entry


async def _status(stack: Stack, account: Account, cid: str) -> str:
    resp = await stack.client.get(f"/v1/capsules/{cid}", headers=account.h)
    return str(resp.json()["status"])


async def test_a_record_whose_capsule_its_host_lost_is_stopped_and_audited(
    start_app: StartApp,
) -> None:
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        alice = await new_account(stack.client)
        cid = (await make_capsule(stack.client, alice))["id"]
        stack.agent.forget(cid)
        entry = await _entry(stack, alice, "stopped", cid)
        assert entry["metadata"]["from"] == "running"
        assert entry["metadata"]["found"] == "its host agent no longer has it"
        assert entry["metadata"]["done"] == "marked stopped"
        assert entry["metadata"]["reason"] == VANISHED


async def test_a_dead_sandbox_is_an_error_destroyed_on_its_host_and_audited(
    start_app: StartApp,
) -> None:
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        alice = await new_account(stack.client)
        cid = (await make_capsule(stack.client, alice))["id"]
        stack.agent.kill(cid, "out of memory")
        entry = await _entry(stack, alice, "died", cid)
        assert entry["status"] == "error"
        assert entry["metadata"]["from"] == "running"
        assert "dead on its host (out of memory)" in entry["metadata"]["found"]
        assert "destroyed on its host" in entry["metadata"]["done"]
        await wait_for(lambda: cid not in stack.agent.sandboxes, what="destroyed on the agent")


async def test_a_sandbox_alive_without_a_record_is_destroyed_and_audited(
    start_app: StartApp,
) -> None:
    """A live capsule its host has but no row names (its create's row was removed while the
    agent went on): destroyed once it is older than any create, which a young one is not."""
    async with start_app(reconcile_interval_sec=INTERVAL, create_grace_sec=60) as stack:
        admin = await new_admin(stack.client, stack.db)
        orphan, young = (ids.SANDBOX.format(uuid.uuid4()) for _ in range(2))
        stack.agent.adopt(orphan).created_at = time.time() - 3600
        stack.agent.adopt(young)
        entry = await _entry(stack, admin, "host_cleanup", orphan, "/v1/admin/audit-logs")
        assert entry["team_id"] is None
        assert entry["metadata"]["was"] == "no record"
        assert "with no record of it" in entry["metadata"]["found"]
        assert entry["metadata"]["done"] == "destroyed on its host"
        assert orphan not in stack.agent.sandboxes
        passes = stack.agent.calls.count("ListSandboxes")
        await wait_for(lambda: stack.agent.calls.count("ListSandboxes") >= passes + 3, what="3")
        assert young in stack.agent.sandboxes  # perhaps a create under way: left alone


async def test_a_sandbox_alive_whose_record_ended_is_destroyed_and_audited(
    start_app: StartApp,
) -> None:
    """Stopped while its host could not be reached (its team deleted, say): an ended row is
    final, so the capsule its host still runs is destroyed there."""
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        alice = await new_account(stack.client)
        cid = (await make_capsule(stack.client, alice))["id"]
        async with stack.db.sessionmaker() as session, session.begin():
            await session.execute(
                update(Sandbox).where(Sandbox.id == ids.SANDBOX.parse(cid)).values(status="stopped")
            )
        entry = await _entry(stack, alice, "host_cleanup", cid)
        assert entry["metadata"]["was"] == "stopped"
        assert "though its record says stopped" in entry["metadata"]["found"]
        assert entry["metadata"]["done"] == "destroyed on its host"
        assert cid not in stack.agent.sandboxes


async def test_the_ends_of_a_pause_an_agent_restart_interrupted_are_audited(
    start_app: StartApp,
) -> None:
    """A restarted agent finishes a pause whose checkpoint is whole (it reports the capsule
    paused on its own) and discards a half-written one (the sandbox gone: dead, with why)."""
    async with start_app(reconcile_interval_sec=INTERVAL) as stack:
        alice = await new_account(stack.client)
        whole, half = [(await make_capsule(stack.client, alice))["id"] for _ in range(2)]
        finished = stack.agent.sandboxes[whole]
        finished.status, finished.auto_paused = "paused", True
        stack.agent.kill(half, INTERRUPTED)
        paused = await _entry(stack, alice, "auto_pause", whole)
        assert paused["metadata"]["found"].startswith("its host agent paused it on its own")
        assert paused["metadata"]["done"] == "marked paused"
        died = await _entry(stack, alice, "died", half)
        assert died["metadata"]["reason"] == INTERRUPTED
        assert INTERRUPTED in died["metadata"]["found"]
        assert await _status(stack, alice, whole) == "paused"
        assert await _status(stack, alice, half) == "error"
