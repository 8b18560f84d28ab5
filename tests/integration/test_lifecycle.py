"""Create, inspect, list and destroy capsules through the agent's RPC API."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DEFAULT_USER, HOME, CapsuleFactory, run
from .traces import traces_of

pytestmark = pytest.mark.integration


async def test_create_exec_destroy_leaves_no_trace(agent: AgentClient) -> None:
    sb = await agent.create_sandbox(pb.CreateSandboxRequest(vcpus=1, memory_mb=256, timeout_sec=0))
    try:
        assert sb.sandbox_id.startswith("sb-")
        assert sb.status == pb.SANDBOX_STATUS_RUNNING
        assert (sb.vcpus, sb.memory_mb, sb.disk_size_mb) == (1, 256, 5120)
        res = await run(agent, sb.sandbox_id, "echo hello; echo oops >&2; exit 3")
        assert (res.stdout, res.stderr, res.exit_code) == (b"hello\n", b"oops\n", 3)
        got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
        assert got.sandbox_id == sb.sandbox_id
        listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
        assert sb.sandbox_id in [s.sandbox_id for s in listed.sandboxes]
        assert set(traces_of(sb.sandbox_id)) >= {"netns", "veth", "directory", "mount", "process"}
    finally:
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    assert traces_of(sb.sandbox_id) == []
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.get_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_caller_chosen_id_and_resources(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sandbox_id = f"sb-{uuid.uuid4()}"
    sb = await new_capsule(sandbox_id=sandbox_id, vcpus=2, memory_mb=512, disk_size_mb=1024)
    assert sb.sandbox_id == sandbox_id
    res = await run(agent, sandbox_id, "df -m / | tail -1 | awk '{print $2}'")
    assert 900 <= int(res.stdout) <= 1024
    cg = Path("/sys/fs/cgroup")
    assert (cg / f"cpu/wrenn/{sandbox_id}/cpu.cfs_quota_us").read_text().strip() == "200000"
    limit = (cg / f"memory/wrenn/{sandbox_id}/memory.limit_in_bytes").read_text()
    assert int(limit) == 512 * 1024 * 1024
    assert (cg / f"pids/wrenn/{sandbox_id}/pids.max").read_text().strip() == "1024"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.create_sandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_default_user_and_env(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    sb = await new_capsule(default_user="nobody", default_env={"GREETING": "hi"})
    res = await run(agent, sb.sandbox_id, "id -un; echo $GREETING")
    assert res.stdout == b"nobody\nhi\n"


async def test_the_base_templates_user_is_the_default_and_a_flattened_template_keeps_it(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sb = await new_capsule()
    res = await run(agent, sb.sandbox_id, "id -un; pwd; locale 2>&1 | grep -c warning")
    assert res.stdout == f"{DEFAULT_USER}\n{HOME}\n0\n".encode(), res.stderr
    flat = f"flat-{uuid.uuid4().hex[:8]}"
    await agent.flatten_rootfs(pb.FlattenRootfsRequest(sandbox_id=sb.sandbox_id, name=flat))
    try:
        child = await new_capsule(template=flat)
        assert (await run(agent, child.sandbox_id, "id -un")).stdout == b"wrenn-user\n"
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=child.sandbox_id))
    finally:
        await agent.delete_snapshot(pb.DeleteSnapshotRequest(name=flat))


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"template": "no-such-template"}, grpc.StatusCode.NOT_FOUND),
        ({"template": "../etc"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"vcpus": 999}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"memory_mb": 1}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"disk_size_mb": 1}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"timeout_sec": -1}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"sandbox_id": "not-an-id"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"default_user": "no-such-user"}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_bad_create_requests_leave_nothing(
    agent: AgentClient, kwargs: dict[str, object], code: grpc.StatusCode
) -> None:
    before = await agent.list_sandboxes(pb.ListSandboxesRequest())
    sandbox_id = str(kwargs.pop("sandbox_id", f"sb-{uuid.uuid4()}"))
    # Not the warm pool's shape, so a failure after boot (unknown default user) really has a
    # booted capsule to clean up.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.create_sandbox(
            pb.CreateSandboxRequest(sandbox_id=sandbox_id, **{"memory_mb": 256, **kwargs})
        )
    assert e.value.code() == code
    assert "Traceback" not in (e.value.details() or "")
    after = await agent.list_sandboxes(pb.ListSandboxesRequest())
    assert len(after.sandboxes) == len(before.sandboxes)
    assert traces_of(sandbox_id) == []


async def test_unknown_sandbox_is_not_found(agent: AgentClient) -> None:
    missing = f"sb-{uuid.uuid4()}"
    for method, req in [
        (agent.destroy_sandbox, pb.SandboxRef(sandbox_id=missing)),
        (agent.pause_sandbox, pb.SandboxRef(sandbox_id=missing)),
        (agent.exec, pb.ExecRequest(sandbox_id=missing, cmd="true")),
        (agent.stat, pb.FileRef(sandbox_id=missing, path="/")),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await method(req)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND, method


async def test_requests_without_the_secret_are_refused(agent_process: object) -> None:
    from .conftest import AgentProcess

    assert isinstance(agent_process, AgentProcess)
    async with AgentClient(agent_process.target, "wrong-secret") as bad:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await bad.list_sandboxes(pb.ListSandboxesRequest())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_ping_resets_the_idle_timer(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    sb = await new_capsule()
    before = (await agent.get_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))).last_active_at
    await asyncio.sleep(0.05)
    await agent.ping_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    after = (await agent.get_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))).last_active_at
    assert after.ToNanoseconds() > before.ToNanoseconds()
