"""Abuse by a signed-up team, against the real agent: capsules bigger than the team's quotas or
than the host can hold are refused, and nothing of them is left (no row, no capsule on the
agent, no directory, namespace or cgroup on the host). The agent refuses on its own too: more
vCPUs than the host's CPUs, memory beyond total x overcommit less the reserve (also for a
resume), a disk beyond the free space."""

from __future__ import annotations

import json
import os
import shutil

import grpc
import pytest
from sqlalchemy import select

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import Host, Sandbox, TeamQuota
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.hostagent.capsule import new_sandbox_id
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import assert_error
from .conftest import DATA_DIR, CapsuleFactory, wait_for
from .rest_fixtures import StartApp, new_account
from .traces import traces_of

pytestmark = pytest.mark.integration

# The session agent's settings (tests/conftest.py starts it with the defaults).
MEMORY_RESERVE_MB = 512
DISK_RESERVE_MB = 2048
TOTAL_MB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
# What the agent lets its live capsules reserve together (overcommit 1.0).
LIMIT_MB = TOTAL_MB - MEMORY_RESERVE_MB


def _owned_dirs() -> set[str]:
    """The capsule directories on the agent that belong to someone (not idle pooled ones, which
    come and go on their own)."""
    owned = set()
    for meta_path in (DATA_DIR / "capsules").glob("*/meta.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("status") != "pooled":
            owned.add(meta_path.parent.name)
    return owned


async def _agent_ids(agent: AgentClient) -> set[str]:
    listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
    return {sb.sandbox_id for sb in listed.sandboxes}


async def test_a_new_team_cannot_take_the_host(
    start_app: StartApp, rest_db: Database, agent: AgentClient
) -> None:
    async with start_app(reconcile_interval_sec=0.2) as rest:
        api = rest.client
        user = await new_account(api)

        async def host_known() -> bool:
            async with rest_db.sessionmaker() as session:
                host = await session.scalar(select(Host))
                return host is not None and host.disk_free_mb is not None

        # The reconciler has recorded what the agent says of its host.
        await wait_for(host_known)
        async with rest_db.sessionmaker() as session:
            host = await session.scalar(select(Host))
            assert host is not None
        assert (host.cpu_cores, host.memory_mb) == (os.cpu_count(), TOTAL_MB)
        dirs, on_agent = _owned_dirs(), await _agent_ids(agent)

        # The attack: two capsules of 20,000 MB and 64 vCPUs. The team's quotas stop
        # them first.
        attack = {"memory_mb": 20_000, "vcpus": 64}
        for _ in range(2):
            refused = await api.post("/v1/capsules", json=attack, headers=user.h)
            error = assert_error(refused, 403, "quota_exceeded")
            assert error["quota"] == "max_vcpus"

        # A team whose quotas an admin lifted meets the host's limits instead.
        async with rest_db.sessionmaker() as session, transaction(session, write=True):
            session.add(
                TeamQuota(
                    team_id=ids.TEAM.parse(user.team_id),
                    max_vcpus=1000,
                    max_memory_mb=1 << 20,
                )
            )
        for _ in range(2):
            refused = await api.post("/v1/capsules", json=attack, headers=user.h)
            error = assert_error(refused, 503, "no_hosts_available")
            assert "64 CPUs" in error["message"]
        # Within the host's CPUs, one capsule of most of its memory fits; a second does not.
        big = {"memory_mb": int(TOTAL_MB * 0.8)}
        first = await api.post("/v1/capsules", json=big, headers=user.h)
        assert first.status_code == 201, first.text
        second = await api.post("/v1/capsules", json=big, headers=user.h)
        error = assert_error(second, 503, "no_hosts_available")
        assert "memory free" in error["message"]

        # Nothing is left of the refused ones: one row, one capsule on the agent.
        kept = first.json()["id"]
        async with rest_db.sessionmaker() as session:
            rows = list(await session.scalars(select(Sandbox)))
        assert [ids.SANDBOX.format(r.id) for r in rows] == [kept]
        assert await _agent_ids(agent) == on_agent | {kept}
        assert _owned_dirs() <= dirs | {kept} | _pooled_handles_of(kept)


def _pooled_handles_of(sandbox_id: str) -> set[str]:
    """The directory a capsule handed over by the warm pool keeps (its pooled handle)."""
    for meta_path in (DATA_DIR / "capsules").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        if meta.get("sandbox_id") == sandbox_id:
            return {meta_path.parent.name}
    return set()


async def test_the_agent_refuses_what_its_host_cannot_hold(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    free_mb = shutil.disk_usage(DATA_DIR).free // (1 << 20)
    refusals: list[tuple[dict[str, int], str]] = [
        ({"vcpus": (os.cpu_count() or 1) + 1}, "CPUs"),
        ({"memory_mb": LIMIT_MB + 1}, "memory left"),
    ]
    if free_mb - DISK_RESERVE_MB + 1 <= 1 << 20:  # the largest disk the agent takes
        refusals.append(({"disk_size_mb": free_mb - DISK_RESERVE_MB + 1}, "disk free"))
    for spec, named in refusals:
        sandbox_id = new_sandbox_id()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent.create_sandbox(
                pb.CreateSandboxRequest(sandbox_id=sandbox_id, **{"memory_mb": 256, **spec})
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, spec
        assert named in (refused.value.details() or ""), refused.value.details()
        assert traces_of(sandbox_id) == [], spec
        assert sandbox_id not in await _agent_ids(agent)

    # A paused capsule holds no memory; while another takes all of it, it cannot resume, and
    # stays paused (its checkpoint kept) until there is room again.
    paused = await new_capsule(memory_mb=256)
    sid = paused.sandbox_id
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=sid))
    hog = await new_capsule(memory_mb=LIMIT_MB)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=sid))
    assert got.status == pb.SANDBOX_STATUS_PAUSED
    await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=hog.sandbox_id))
    resumed = await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid))
    assert resumed.status == pb.SANDBOX_STATUS_RUNNING
    assert (await agent.exec(pb.ExecRequest(sandbox_id=sid, cmd="echo back"))).stdout == b"back\n"
