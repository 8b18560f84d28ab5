"""Pause keeps memory and disk; resume brings both back. The TTL reaper pauses idle capsules."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import CapsuleFactory, run, wait_for
from .test_snapshots import assert_clean_fs
from .traces import capsule_dir, traces_of

pytestmark = pytest.mark.integration

COUNTER = (
    "nohup python3 -c 'import time\nn=0\nwhile True:\n"
    ' n+=1; open("/tmp/count.tmp","w").write(str(n)); '
    '__import__("os").replace("/tmp/count.tmp","/tmp/count"); time.sleep(0.05)\' '
    ">/dev/null 2>&1 & echo $!"
)


async def read_counter(agent: AgentClient, sandbox_id: str) -> int:
    res = await run(agent, sandbox_id, "cat /tmp/count")
    return int(res.stdout)


async def counted(agent: AgentClient, sandbox_id: str, beyond: int) -> bool:
    """Whether the counter has counted past `beyond` (it may not have written its file yet);
    it never counts back: its count lives in its memory."""
    res = await run(agent, sandbox_id, "cat /tmp/count")
    if res.exit_code != 0:
        return False
    count = int(res.stdout)
    assert count >= beyond, (count, beyond)
    return count > beyond


async def test_twenty_cycles_keep_files_and_process_state(
    agent: AgentClient, capsule: pb.Sandbox
) -> None:
    sid = capsule.sandbox_id
    await run(
        agent,
        sid,
        "head -c 20000000 /dev/urandom > /home/wrenn-user/blob && sha256sum /home/wrenn-user/blob",
    )
    checksum = (await run(agent, sid, "sha256sum /home/wrenn-user/blob")).stdout
    # The counter's pid, and its in-memory count, survive every cycle.
    pid = int((await run(agent, sid, COUNTER)).stdout)
    alive = f"tr '\\0' ' ' < /proc/{pid}/cmdline"
    await wait_for(lambda: counted(agent, sid, 0), 10, what="the counter counting")
    last = await read_counter(agent, sid)
    for cycle in range(20):
        paused = await agent.pause_sandbox(pb.SandboxRef(sandbox_id=sid))
        assert paused.status == pb.SANDBOX_STATUS_PAUSED
        assert {"process", "netns", "mount"}.isdisjoint(traces_of(sid)), cycle
        if cycle % 5 == 0:
            assert_clean_fs(capsule_dir(sid) / "disk.img")
        resumed = await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid))
        assert resumed.status == pb.SANDBOX_STATUS_RUNNING
        assert (await run(agent, sid, "sha256sum /home/wrenn-user/blob")).stdout == checksum
        assert b"count.tmp" in (await run(agent, sid, alive)).stdout
        await wait_for(lambda n=last: counted(agent, sid, n), 10, what=f"counting, cycle {cycle}")
        last = await read_counter(agent, sid)


async def test_paused_capsule_refuses_exec_and_double_pause(
    agent: AgentClient, capsule: pb.Sandbox
) -> None:
    ref = pb.SandboxRef(sandbox_id=capsule.sandbox_id)
    await agent.pause_sandbox(ref)
    for method, req in [
        (agent.exec, pb.ExecRequest(sandbox_id=capsule.sandbox_id, cmd="true")),
        (agent.pause_sandbox, ref),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await method(req)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=capsule.sandbox_id))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=capsule.sandbox_id))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_destroy_a_paused_capsule(agent: AgentClient, capsule: pb.Sandbox) -> None:
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=capsule.sandbox_id))
    await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=capsule.sandbox_id))
    assert traces_of(capsule.sandbox_id) == []


async def test_idle_capsule_is_auto_paused_and_keeps_its_timeout(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sb = await new_capsule(timeout_sec=2)
    busy = await new_capsule(timeout_sec=2)
    ref = pb.SandboxRef(sandbox_id=sb.sandbox_id)
    # A command longer than the idle timeout: the capsule is not paused under it.
    command = asyncio.create_task(run(agent, busy.sandbox_id, "sleep 5", timeout_sec=30))

    async def auto_paused() -> bool:
        listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
        return sb.sandbox_id in listed.auto_paused_sandbox_ids

    await wait_for(auto_paused, timeout=20)
    assert (await agent.get_sandbox(ref)).status == pb.SANDBOX_STATUS_PAUSED
    assert (await command).exit_code == 0
    busy_now = await agent.get_sandbox(pb.SandboxRef(sandbox_id=busy.sandbox_id))
    assert busy_now.status == pb.SANDBOX_STATUS_RUNNING
    resumed = await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sb.sandbox_id))
    assert resumed.timeout_sec == 2 and not resumed.auto_paused
    listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
    assert sb.sandbox_id not in listed.auto_paused_sandbox_ids


async def test_resume_can_change_timeout(agent: AgentClient, capsule: pb.Sandbox) -> None:
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=capsule.sandbox_id))
    req = pb.ResumeSandboxRequest(sandbox_id=capsule.sandbox_id, timeout_sec=600)
    assert (await agent.resume_sandbox(req)).timeout_sec == 600


async def test_pause_all(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    a, b = await new_capsule(), await new_capsule()
    res = await agent.pause_all(pb.Empty())
    assert {a.sandbox_id, b.sandbox_id} <= set(res.paused_sandbox_ids)
    for sb in (a, b):
        got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
        assert got.status == pb.SANDBOX_STATUS_PAUSED


@pytest.mark.parametrize("first", ["pause", "destroy"])
async def test_a_destroy_racing_a_pause_ends_with_the_capsule_gone(
    agent: AgentClient, new_capsule: CapsuleFactory, first: str
) -> None:
    """A pause and a destroy of one capsule sent together (either first): the pause either
    finished before the destroy or is told the capsule is gone (it must not run on a capsule
    the destroy discarded), the destroy succeeds, and nothing of the capsule is left - no
    checkpoint, netns, slot or sandbox."""
    sb = await new_capsule()
    await run(agent, sb.sandbox_id, "echo x > /tmp/f")
    ref = pb.SandboxRef(sandbox_id=sb.sandbox_id)
    calls = {
        "pause": lambda: agent.pause_sandbox(ref),
        "destroy": lambda: agent.destroy_sandbox(ref),
    }
    second = "destroy" if first == "pause" else "pause"
    one = asyncio.create_task(calls[first]())
    await asyncio.sleep(0)  # the first call goes out first; the second follows at once
    two = asyncio.create_task(calls[second]())
    results = await asyncio.gather(one, two, return_exceptions=True)
    outcomes = dict(zip((first, second), results, strict=True))
    assert not isinstance(outcomes["destroy"], BaseException), outcomes
    paused = outcomes["pause"]
    if isinstance(paused, BaseException):
        assert isinstance(paused, grpc.aio.AioRpcError), paused
        assert paused.code() == grpc.StatusCode.NOT_FOUND, paused
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await agent.get_sandbox(ref)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    await wait_for(lambda: traces_of(sb.sandbox_id) == [], timeout=30)
