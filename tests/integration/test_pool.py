"""The warm pool: default-shape capsules are handed over instead of booted, and refilled."""

from __future__ import annotations

import json
import time

import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DATA_DIR, DEFAULT_USER, HOME, run, wait_for
from .traces import traces_of

pytestmark = pytest.mark.integration


def pooled_handles() -> set[str]:
    handles = set()
    for d in (DATA_DIR / "capsules").iterdir():
        meta = json.loads((d / "meta.json").read_text())
        if meta["status"] == "pooled":
            handles.add(meta["handle"])
    return handles


async def test_default_shape_comes_from_the_pool(agent: AgentClient) -> None:
    async def pool_ready() -> bool:
        return bool(pooled_handles())

    await wait_for(pool_ready, timeout=30)
    before = pooled_handles()
    listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
    assert not before & {s.sandbox_id for s in listed.sandboxes}, "pooled capsules are unowned"

    t = time.monotonic()
    sb = await agent.create_sandbox(
        pb.CreateSandboxRequest(timeout_sec=30, default_user="nobody", default_env={"K": "v"})
    )
    took = time.monotonic() - t
    try:
        owners = {
            meta["sandbox_id"]: meta["handle"]
            for meta in (
                json.loads((d / "meta.json").read_text()) for d in (DATA_DIR / "capsules").iterdir()
            )
        }
        handle = owners[sb.sandbox_id]
        assert handle in before and handle != sb.sandbox_id, "handed over, not booted"
        assert took < 1.0
        assert sb.timeout_sec == 30
        res = await run(agent, sb.sandbox_id, "id -un; echo $K")
        assert res.stdout == b"nobody\nv\n"
        await wait_for(lambda: _async(bool(pooled_handles() - {handle})), timeout=30)
    finally:
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    assert traces_of(handle) == []


async def _async(value: bool) -> bool:
    return value


async def test_a_pooled_capsule_runs_as_the_templates_default_user(agent: AgentClient) -> None:
    """The pool applies the template's defaults when it boots a capsule (its warm-up command
    runs as that user): a create that asks for nothing else gets them without another call."""

    async def pool_ready() -> bool:
        return bool(pooled_handles())

    await wait_for(pool_ready, timeout=30)
    before = pooled_handles()
    sb = await agent.create_sandbox(pb.CreateSandboxRequest())
    try:
        handles = {
            meta["sandbox_id"]: meta["handle"]
            for meta in (
                json.loads((d / "meta.json").read_text()) for d in (DATA_DIR / "capsules").iterdir()
            )
        }
        assert handles[sb.sandbox_id] in before, "handed over, not booted"
        res = await run(agent, sb.sandbox_id, "id -un; pwd; echo $HOME")
        assert res.stdout.decode().split() == [DEFAULT_USER, HOME, HOME], res.stderr
    finally:
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))


async def test_failed_hand_over_leaves_nothing(agent: AgentClient) -> None:
    import grpc

    async def pool_ready() -> bool:
        return bool(pooled_handles())

    await wait_for(pool_ready, timeout=30)
    before = pooled_handles()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.create_sandbox(pb.CreateSandboxRequest(default_user="no-such-user"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    taken = before - pooled_handles()
    assert taken, "the pooled capsule was used"
    for handle in taken:
        assert traces_of(handle) == []
