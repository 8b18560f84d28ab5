"""The agent can die at any moment (kill -9): on restart it adopts live capsules, keeps paused ones
and removes whatever a half-finished operation left behind."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DATA_DIR, AgentProcess, CapsuleFactory, run
from .traces import traces_of

pytestmark = pytest.mark.integration


async def test_running_and_paused_capsules_survive_kill9(
    agent: AgentClient, agent_process: AgentProcess, new_capsule: CapsuleFactory
) -> None:
    live, paused = await new_capsule(), await new_capsule()
    await run(
        agent, live.sandbox_id, "echo kept > /home/wrenn-user/f; nohup sleep 3600 >/dev/null 2>&1 &"
    )
    await run(agent, paused.sandbox_id, "echo also-kept > /home/wrenn-user/f")
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=paused.sandbox_id))

    agent_process.kill9()
    agent_process.start()

    got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=live.sandbox_id))
    assert got.status == pb.SANDBOX_STATUS_RUNNING
    res = await run(
        agent, live.sandbox_id, "cat /home/wrenn-user/f; pgrep -x sleep >/dev/null && echo up"
    )
    assert res.stdout == b"kept\nup\n"
    got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=paused.sandbox_id))
    assert got.status == pb.SANDBOX_STATUS_PAUSED
    await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=paused.sandbox_id))
    assert (await run(agent, paused.sandbox_id, "cat /home/wrenn-user/f")).stdout == b"also-kept\n"


async def test_kill9_during_create_leaves_nothing(
    agent: AgentClient, agent_process: AgentProcess
) -> None:
    sandbox_id = f"sb-{uuid.uuid4()}"
    # Not the warm pool's shape: this create must boot a capsule.
    create = asyncio.ensure_future(
        agent.create_sandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id, memory_mb=256))
    )
    # Wait until the create is under way on the host, then kill the agent mid-flight.
    for _ in range(500):
        if "netns" in traces_of(sandbox_id) or "mount" in traces_of(sandbox_id):
            break
        await asyncio.sleep(0.002)
    seen = traces_of(sandbox_id)
    agent_process.kill9()
    with contextlib.suppress(grpc.aio.AioRpcError):
        await create
    assert seen, "the agent was killed before it made anything: the test proved nothing"
    agent_process.start()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.get_sandbox(pb.SandboxRef(sandbox_id=sandbox_id))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert traces_of(sandbox_id) == []
    assert not [p for p in (DATA_DIR / "templates").iterdir() if p.name.startswith(".")]
