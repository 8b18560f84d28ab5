"""WatchDir through the agent client against the fake agent (what the root-free tiers build on):
STARTED first, then the capsule's file changes as FsEvents, recursive or not, the stream ended by
the watched directory's removal, and the refusals (missing, not a directory, not listable)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.fakeagent import FakeAgentServer
from wrenn_server.agentproto.client import AgentClient, WatchCall
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeAgentServer, AgentClient, str]]:
    async with FakeAgentServer() as server:
        async with AgentClient(server.target, server.secret) as client:
            sandbox = await client.create_sandbox(pb.CreateSandboxRequest(template="minimal"))
            yield server, client, sandbox.sandbox_id


async def _next(call: WatchCall) -> pb.FsEvent:
    event = await asyncio.wait_for(call.read(), 10)
    assert isinstance(event, pb.FsEvent), event
    return event


async def test_changes_are_streamed(served: tuple[FakeAgentServer, AgentClient, str]) -> None:
    _server, client, sid = served
    await client.make_dir(pb.FileRef(sandbox_id=sid, path="/w/sub"))
    flat = client.watch_dir(pb.WatchDirRequest(sandbox_id=sid, path="/w"))
    deep = client.watch_dir(pb.WatchDirRequest(sandbox_id=sid, path="/w", recursive=True))
    try:
        for call in (flat, deep):
            assert (await _next(call)).type == pb.FS_EVENT_TYPE_STARTED
        await client.write_file(pb.WriteFileRequest(sandbox_id=sid, path="/w/sub/a", data=b"1"))
        await client.write_file(pb.WriteFileRequest(sandbox_id=sid, path="/w/b", data=b"1"))
        await client.write_file(pb.WriteFileRequest(sandbox_id=sid, path="/w/b", data=b"2"))
        await client.move(pb.MoveRequest(sandbox_id=sid, source="/w/b", destination="/w/c"))
        create, write = pb.FS_EVENT_TYPE_CREATE, pb.FS_EVENT_TYPE_WRITE
        rename, remove = pb.FS_EVENT_TYPE_RENAME, pb.FS_EVENT_TYPE_REMOVE
        assert [await _next(deep) for _ in range(5)] == [
            pb.FsEvent(type=create, name="sub/a"),
            pb.FsEvent(type=create, name="b"),
            pb.FsEvent(type=write, name="b"),
            pb.FsEvent(type=rename, name="b"),
            pb.FsEvent(type=create, name="c"),
        ]
        assert (await _next(flat)) == pb.FsEvent(type=create, name="b")  # not sub/a
        await client.remove(pb.FileRef(sandbox_id=sid, path="/w"))
        rest: list[pb.FsEvent] = []
        while (event := await asyncio.wait_for(deep.read(), 10)) != grpc.aio.EOF:
            assert isinstance(event, pb.FsEvent)
            rest.append(event)
        assert rest[-1] == pb.FsEvent(type=remove)
        assert pb.FsEvent(type=remove, name="sub/a") in rest
    finally:
        flat.cancel()
        deep.cancel()


@pytest.mark.parametrize(
    ("path", "user", "code"),
    [
        ("/missing", "", grpc.StatusCode.NOT_FOUND),
        ("/etc/hostname", "", grpc.StatusCode.INVALID_ARGUMENT),
        ("/root", "user", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_refusals(
    served: tuple[FakeAgentServer, AgentClient, str], path: str, user: str, code: grpc.StatusCode
) -> None:
    server, client, sid = served
    server.agent.sandboxes[sid].files.nodes["/root"].mode = 0o700
    call = client.watch_dir(pb.WatchDirRequest(sandbox_id=sid, path=path, user=user))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _next(call)
    assert refused.value.code() == code
