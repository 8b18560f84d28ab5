"""What the REST API reports follows the host: the reconciler notices capsules destroyed or
paused behind the control plane's back (and auto-paused by their idle timeout), and ping
keeps a capsule's activity time fresh on the agent and in the database."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.agents.pool import HostClientPool
from wrenn_server.controlplane.db.models.capsules import Sandbox
from wrenn_server.controlplane.db.models.hosts import Host
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.jobs.reconciler import PAUSE_GRACE, Reconciler
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import assert_error
from .conftest import SECRET, CapsuleFactory, wait_for
from .rest_fixtures import (
    Account,
    StartApp,
    both_dialects,
    make_capsule,
    new_account,
    sh,
    status_of,
)

pytestmark = [pytest.mark.integration, both_dialects]


async def wait_for_status(
    api: httpx.AsyncClient, user: Account, capsule_id: str, status: str, timeout: float = 15
) -> None:
    async def reached() -> bool:
        resp = await api.get(f"/v1/capsules/{capsule_id}", headers=user.h)
        assert resp.status_code == 200, resp.text
        return bool(resp.json()["status"] == status)

    await wait_for(reached, timeout, interval=0.1, what=f"{capsule_id} {status}")


async def test_reconciler_follows_the_host(
    start_app: StartApp, agent: AgentClient, new_capsule: CapsuleFactory, rest_db: Database
) -> None:
    # A capsule on the host that the control plane never made: it must not keep the reconciler
    # from doing its job.
    await new_capsule(sandbox_id=f"sb-{uuid.uuid4()}", memory_mb=256)
    async with start_app(reconcile_interval_sec=0.2) as rest:
        api = rest.client
        user = await new_account(api)
        gone, paused = await make_capsule(api, user), await make_capsule(api, user)
        # The idle one gets its timeout and auto_resume from the team's parking policy.
        resp = await api.put(
            f"/v1/teams/{user.team_id}/parking",
            json={"idle_sec": 1, "auto_resume": True},
            headers=user.jwt,
        )
        assert resp.status_code == 200, resp.text
        idle = await make_capsule(api, user)
        assert (idle["timeout_sec"], idle["auto_resume"]) == (1, True)

        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=gone["id"]))
        await wait_for_status(api, user, gone["id"], "stopped")
        # Paused by a caller of the agent other than the control plane: a pause call of the
        # control plane's own may still own the row for as long as a pause can take, so the row
        # is made older than that.
        await agent.pause_sandbox(pb.SandboxRef(sandbox_id=paused["id"]))
        async with rest_db.sessionmaker() as session, transaction(session, write=True):
            await session.execute(
                update(Sandbox)
                .where(Sandbox.id == ids.SANDBOX.parse(paused["id"]))
                .values(last_updated=utcnow() - PAUSE_GRACE - dt.timedelta(minutes=1))
            )
        await wait_for_status(api, user, paused["id"], "paused")
        # Auto-paused by the agent's TTL reaper once idle for timeout_sec.
        await wait_for_status(api, user, idle["id"], "paused")

        # The control plane is still in charge of both: they resume over REST and stay running;
        # the parked one on the next exec into it.
        resp = await api.post(f"/v1/capsules/{paused['id']}/resume", headers=user.h)
        assert resp.status_code == 200 and resp.json()["status"] == "running", resp.text
        for capsule in (paused, idle):
            assert (await sh(api, user, capsule["id"], "echo up"))["stdout"] == "up\n"
        on_agent = await agent.get_sandbox(pb.SandboxRef(sandbox_id=idle["id"]))
        assert on_agent.timeout_sec == 1  # the idle timeout survives pause and resume
        await asyncio.sleep(0.5)
        resp = await api.get(f"/v1/capsules/{paused['id']}", headers=user.h)
        assert resp.json()["status"] == "running"
        resp = await api.get(f"/v1/capsules/{gone['id']}", headers=user.h)
        assert resp.json()["status"] == "stopped"


async def test_ping_refreshes_last_active_at(api: httpx.AsyncClient, agent: AgentClient) -> None:
    user = await new_account(api)
    capsule = await make_capsule(api, user)
    cid = capsule["id"]
    before = dt.datetime.fromisoformat(capsule["last_active_at"])
    on_agent = await agent.get_sandbox(pb.SandboxRef(sandbox_id=cid))
    agent_before = on_agent.last_active_at.ToDatetime(dt.UTC)
    await asyncio.sleep(1.1)

    resp = await api.post(f"/v1/capsules/{cid}/ping", headers=user.h)
    assert resp.status_code == 204 and resp.content == b""
    resp = await api.get(f"/v1/capsules/{cid}", headers=user.h)
    after = dt.datetime.fromisoformat(resp.json()["last_active_at"])
    assert after - before >= dt.timedelta(seconds=1)
    on_agent = await agent.get_sandbox(pb.SandboxRef(sandbox_id=cid))
    assert on_agent.last_active_at.ToDatetime(dt.UTC) - agent_before >= dt.timedelta(seconds=1)

    resp = await api.post(f"/v1/capsules/{cid}/pause", headers=user.h)
    assert resp.status_code == 200
    resp = await api.post(f"/v1/capsules/{cid}/ping", headers=user.h)
    assert_error(resp, 409, "invalid_state")


class AnswerThenMeanwhile:
    """A host client pool whose clients, once an agent has answered ListSandboxes, run
    `meanwhile` before handing the answer over: the interleaving a busy control plane produces
    now and then, made certain."""

    def __init__(self, pool: HostClientPool, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self.pool = pool
        self.meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    async def client(self, host: Host) -> AnswerThenMeanwhile:
        self.real = await self.pool.client(host)
        return self

    async def list_sandboxes(
        self, request: pb.ListSandboxesRequest, *, timeout: float | None = None
    ) -> pb.ListSandboxesResponse:
        answer = await self.real.list_sandboxes(request, timeout=timeout)
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["real"], name)  # every other call goes to the agent


async def test_reconciler_keeps_changes_newer_than_the_agents_answer(
    api: httpx.AsyncClient, rest_db: Database
) -> None:
    user = await new_account(api)
    resumed = await make_capsule(api, user)
    assert (await api.post(f"/v1/capsules/{resumed['id']}/pause", headers=user.h)).is_success
    created: dict[str, Any] = {}

    async def meanwhile() -> None:
        created.update(await make_capsule(api, user))
        resp = await api.post(f"/v1/capsules/{resumed['id']}/resume", headers=user.h)
        assert resp.status_code == 200, resp.text

    pool = HostClientPool(lambda _host_id: SECRET)
    try:
        interleaved = AnswerThenMeanwhile(pool, meanwhile)
        await Reconciler(rest_db, interleaved).run_once()  # type: ignore[arg-type]
        for capsule in (created, resumed):
            assert await status_of(api, user, capsule["id"]) == "running"
        # The next pass, with a fresh answer, agrees.
        await Reconciler(rest_db, pool).run_once()
        for capsule in (created, resumed):
            assert await status_of(api, user, capsule["id"]) == "running"
    finally:
        await pool.close()
