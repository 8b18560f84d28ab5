"""Snapshot templates (memory + disk) and flattened image templates."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DATA_DIR, CapsuleFactory, run

pytestmark = pytest.mark.integration


def assert_clean_fs(image: Path) -> None:
    check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def delete_template(agent: AgentClient, template: str) -> None:
    await agent.delete_snapshot(pb.DeleteSnapshotRequest(name=template))
    assert not (DATA_DIR / "templates" / template).exists()


async def test_snapshot_template_restores_files_and_processes(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    src = await new_capsule()
    await run(agent, src.sandbox_id, "echo from-snapshot > /home/wrenn-user/marker")
    await run(agent, src.sandbox_id, "nohup sleep 3600 >/dev/null 2>&1 &")
    tname = name()
    req = pb.CreateSnapshotRequest(sandbox_id=src.sandbox_id, name=tname)
    t = await agent.create_snapshot(req)
    try:
        assert t.type == pb.TEMPLATE_TYPE_SNAPSHOT and t.size_bytes > 0 and t.base == "minimal"
        # The disk was copied only after the sandbox's last hold on it was gone: a consistent
        # filesystem (copied while still mounted in the dying sandbox it came out corrupt).
        assert_clean_fs(DATA_DIR / "templates" / tname / "disk.img")
        # The source capsule is paused, not lost.
        got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=src.sandbox_id))
        assert got.status == pb.SANDBOX_STATUS_PAUSED
        a, b = await new_capsule(template=tname), await new_capsule(template=tname)
        for sb in (a, b):
            assert (
                await run(agent, sb.sandbox_id, "cat /home/wrenn-user/marker")
            ).stdout == b"from-snapshot\n"
            assert (await run(agent, sb.sandbox_id, "pgrep -x sleep")).exit_code == 0
        # Later writes stay private to each capsule.
        await run(agent, a.sandbox_id, "echo a-only > /home/wrenn-user/marker")
        assert (
            await run(agent, b.sandbox_id, "cat /home/wrenn-user/marker")
        ).stdout == b"from-snapshot\n"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await agent.create_snapshot(req)
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
        listed = await agent.list_templates(pb.Empty())
        assert tname in [x.name for x in listed.templates]
        for sb in (a, b):
            await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    finally:
        await delete_template(agent, tname)


async def test_snapshot_overwrite_replaces_files(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    tname = name()
    src = await new_capsule()
    await run(agent, src.sandbox_id, "echo one > /home/wrenn-user/v")
    await agent.create_snapshot(pb.CreateSnapshotRequest(sandbox_id=src.sandbox_id, name=tname))
    await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=src.sandbox_id))
    await run(agent, src.sandbox_id, "echo two > /home/wrenn-user/v")
    req = pb.CreateSnapshotRequest(sandbox_id=src.sandbox_id, name=tname, overwrite=True)
    await agent.create_snapshot(req)
    try:
        sb = await new_capsule(template=tname)
        assert (await run(agent, sb.sandbox_id, "cat /home/wrenn-user/v")).stdout == b"two\n"
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
        leftovers = [p.name for p in (DATA_DIR / "templates").iterdir() if tname in p.name]
        assert leftovers == [tname]
    finally:
        await delete_template(agent, tname)


async def test_flatten_makes_an_image_template(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    src = await new_capsule()
    await run(agent, src.sandbox_id, "echo baked > /etc/baked && rm /etc/hosts", user="root")
    tname = name()
    req = pb.FlattenRootfsRequest(sandbox_id=src.sandbox_id, name=tname)
    t = await agent.flatten_rootfs(req)
    try:
        assert t.type == pb.TEMPLATE_TYPE_IMAGE and t.size_bytes > 50_000_000
        # The source keeps running.
        assert (await run(agent, src.sandbox_id, "echo still")).stdout == b"still\n"
        sb = await new_capsule(template=tname)
        res = await run(agent, sb.sandbox_id, "cat /etc/baked; test -e /etc/hosts || echo gone")
        assert res.stdout == b"baked\ngone\n"
        # In use by a capsule: refusing to delete protects its lower layer.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await agent.delete_snapshot(pb.DeleteSnapshotRequest(name=tname))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    finally:
        await delete_template(agent, tname)


async def test_delete_unknown_template(agent: AgentClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.delete_snapshot(pb.DeleteSnapshotRequest(name="no-such-template"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
