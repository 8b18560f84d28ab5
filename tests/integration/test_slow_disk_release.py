"""A capsule's disk image that the host does not let go of in time (a loaded box flushing it,
something on the host holding it): the disk is held busy for real by a host process whose working
directory is on the capsule's mounted disk, so our unmount can only detach it and its loop device
stays attached until that process goes.

A pause whose checkpoint is complete ends paused (the agent and its answer agree), a resume
while the disk is still held is refused with a clear, retryable error and leaves the capsule
paused, and once the disk is let go the capsule resumes with its files. Before, the pause failed
with an internal error and left the capsule half torn down while still listed running: every
command 502, a second pause an internal assertion, resume 409."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DATA_DIR, HOME, CapsuleFactory, run, wait_for
from .leaks import leaks

pytestmark = pytest.mark.integration


def _capsule_dir(sandbox_id: str) -> Path:
    for meta in (DATA_DIR / "capsules").glob("*/meta.json"):
        if json.loads(meta.read_text()).get("sandbox_id") == sandbox_id:
            return meta.parent
    raise AssertionError(f"no directory for {sandbox_id}")


def _attached(image: Path) -> bool:
    out = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True)
    return bool(out.stdout.strip())


async def test_a_pause_whose_disk_is_held_ends_paused_and_resumes_once_released(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sid = (await new_capsule()).sandbox_id
    ref = pb.SandboxRef(sandbox_id=sid)
    wrote = await run(agent, sid, f"echo kept > {HOME}/f && sync")
    assert wrote.exit_code == 0, wrote.stderr
    directory = _capsule_dir(sid)
    image = directory / "disk.img"
    holder = await asyncio.create_subprocess_exec("sleep", "600", cwd=directory / "disk" / "upper")
    try:
        await agent.pause_sandbox(ref, timeout=300)
        assert (await agent.get_sandbox(ref)).status == pb.SANDBOX_STATUS_PAUSED
        assert _attached(image)  # the host really still holds it
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid), timeout=300)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "disk" in (refused.value.details() or "")
        assert (await agent.get_sandbox(ref)).status == pb.SANDBOX_STATUS_PAUSED
        # Nothing of a sandbox is left running for a paused capsule (its network is released).
        assert not (await agent.list_sandboxes(pb.ListSandboxesRequest())).auto_paused_sandbox_ids
    finally:
        holder.kill()
        await holder.wait()
    await wait_for(lambda: not _attached(image), 60, what="the disk image let go")
    resumed = await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid), timeout=300)
    assert resumed.status == pb.SANDBOX_STATUS_RUNNING
    read = await run(agent, sid, f"cat {HOME}/f")
    assert read.stdout == b"kept\n", read.stderr
    await agent.destroy_sandbox(ref)
    await wait_for(lambda: not leaks(DATA_DIR, {directory.name}), 60, what="no leaks")
