"""Per-capsule metrics from a real capsule: the sampler sees CPU work, resident memory and
disk writes, keeps the series across pause and resume, and forgets it on destroy."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import CapsuleFactory, run, wait_for

pytestmark = pytest.mark.integration


async def _tiers(agent: AgentClient, sandbox_id: str) -> dict[str, list[pb.MetricPoint]]:
    resp = await agent.get_sandbox_metrics(pb.SandboxRef(sandbox_id=sandbox_id))
    return {tier.name: list(tier.points) for tier in resp.tiers}


async def test_samples_follow_what_the_capsule_does(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    capsule = await new_capsule(vcpus=1, memory_mb=256)
    sid = capsule.sandbox_id

    async def sampled() -> bool:
        return len((await _tiers(agent, sid))["10m"]) >= 3

    await wait_for(sampled, 10)
    idle = (await _tiers(agent, sid))["10m"]
    assert set(await _tiers(agent, sid)) == {"10m", "2h", "24h"}
    assert all(p.mem_bytes > 0 for p in idle[1:])
    assert all(0 <= p.cpu_pct <= 100 for p in idle)
    stamps = [p.timestamp_ms for p in idle]
    assert stamps == sorted(stamps)

    # Three seconds of a busy loop on the capsule's only vCPU: a sample taken meanwhile shows it.
    busy_loop = "end=$(($(date +%s)+3)); while [ $(date +%s) -lt $end ]; do :; done"
    start = len((await _tiers(agent, sid))["10m"])
    burn = asyncio.create_task(run(agent, sid, busy_loop))

    async def busy_sampled() -> bool:
        since = (await _tiers(agent, sid))["10m"][start:]
        return any(p.cpu_pct > 50 for p in since)

    await wait_for(busy_sampled, 10, what="a sample of the busy loop over 50 %")
    await burn

    before = (await _tiers(agent, sid))["10m"][-1].disk_bytes
    await run(agent, sid, "head -c 50000000 /dev/urandom > data.bin && sync")

    async def disk_grew() -> bool:
        last = (await _tiers(agent, sid))["10m"][-1].disk_bytes
        return last >= before + 40_000_000

    await wait_for(disk_grew, 10)

    # Pause keeps the series (a resumed capsule's charts go on); destroy forgets it.
    count = len((await _tiers(agent, sid))["10m"])
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=sid))
    paused = (await _tiers(agent, sid))["10m"]
    assert len(paused) >= count
    await asyncio.sleep(1.2)
    assert len((await _tiers(agent, sid))["10m"]) == len(paused)  # no samples while paused
    await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid))

    async def sampled_again() -> bool:
        return len((await _tiers(agent, sid))["10m"]) > len(paused)

    await wait_for(sampled_again, 10)
    await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sid))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await _tiers(agent, sid)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
