"""Files in capsules: unary and streamed transfers (over 100 MB both ways), directory operations."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import run

pytestmark = pytest.mark.integration

BIG = 150 * 1024 * 1024


async def test_unary_write_read_stat_list(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    req = pb.WriteFileRequest(
        sandbox_id=sid, path="/home/wrenn-user/dir/a.txt", data=b"hello", mode=0o600
    )
    entry = await agent.write_file(req)
    assert (entry.path, entry.size, entry.type, entry.mode & 0o777) == (
        "/home/wrenn-user/dir/a.txt",
        5,
        "file",
        0o600,
    )
    got = await agent.read_file(pb.FileRef(sandbox_id=sid, path="/home/wrenn-user/dir/a.txt"))
    assert got.data == b"hello"
    await agent.make_dir(pb.FileRef(sandbox_id=sid, path="/home/wrenn-user/dir/sub/deeper"))
    listed = await agent.list_dir(
        pb.ListDirRequest(sandbox_id=sid, path="/home/wrenn-user/dir", depth=1)
    )
    assert sorted(e.name for e in listed.entries) == ["a.txt", "sub"]
    deep = await agent.list_dir(
        pb.ListDirRequest(sandbox_id=sid, path="/home/wrenn-user/dir", depth=3)
    )
    assert "/home/wrenn-user/dir/sub/deeper" in [e.path for e in deep.entries]
    moved = await agent.move(
        pb.MoveRequest(
            sandbox_id=sid,
            source="/home/wrenn-user/dir/a.txt",
            destination="/home/wrenn-user/b.txt",
        )
    )
    assert moved.path == "/home/wrenn-user/b.txt"
    await agent.remove(pb.FileRef(sandbox_id=sid, path="/home/wrenn-user/dir"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.stat(pb.FileRef(sandbox_id=sid, path="/home/wrenn-user/dir"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_files_written_as_user(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    req = pb.WriteFileRequest(sandbox_id=sid, path="/tmp/owned", data=b"x", user="nobody")
    assert (await agent.write_file(req)).owner == "nobody"
    assert (await run(agent, sid, "stat -c %U /tmp/owned")).stdout == b"nobody\n"


async def test_big_file_streams_both_ways(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    digest = hashlib.sha256()

    async def chunks() -> AsyncIterator[bytes]:
        block = os.urandom(1024 * 1024)
        for i in range(BIG // len(block)):
            piece = bytes([i % 256]) + block[1:]
            digest.update(piece)
            yield piece

    header = pb.WriteFileStreamRequest.Header(sandbox_id=sid, path="/home/wrenn-user/big.bin")
    entry = await agent.write_file_stream(header, chunks())
    assert entry.size == BIG
    res = await run(agent, sid, "sha256sum /home/wrenn-user/big.bin | cut -d' ' -f1")
    assert res.stdout.decode().strip() == digest.hexdigest()
    back = hashlib.sha256()
    total = 0
    async for msg in agent.read_file_stream(
        pb.FileRef(sandbox_id=sid, path="/home/wrenn-user/big.bin")
    ):
        assert len(msg.data) <= 4 * 1024 * 1024
        back.update(msg.data)
        total += len(msg.data)
    assert total == BIG and back.hexdigest() == digest.hexdigest()
    # Too big for the unary form: a clear error, not a memory spike.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.read_file(pb.FileRef(sandbox_id=sid, path="/home/wrenn-user/big.bin"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_file_errors(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.read_file(pb.FileRef(sandbox_id=sid, path="/no/such/file"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await collect_stream(agent, sid, "/etc")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def collect_stream(agent: AgentClient, sid: str, path: str) -> bytes:
    out = b""
    async for msg in agent.read_file_stream(pb.FileRef(sandbox_id=sid, path=path)):
        out += msg.data
    return out


async def test_upload_without_its_end_writes_nothing(
    agent: AgentClient, capsule: pb.Sandbox
) -> None:
    sid = capsule.sandbox_id
    await agent.write_file(
        pb.WriteFileRequest(sandbox_id=sid, path="/home/wrenn-user/v", data=b"old")
    )

    async def cut_short() -> AsyncIterator[pb.WriteFileStreamRequest]:
        header = pb.WriteFileStreamRequest.Header(sandbox_id=sid, path="/home/wrenn-user/v")
        yield pb.WriteFileStreamRequest(header=header)
        yield pb.WriteFileStreamRequest(chunk=b"half of the new")

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.stub.WriteFileStream(cut_short(), metadata=agent.metadata)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = await agent.read_file(pb.FileRef(sandbox_id=sid, path="/home/wrenn-user/v"))
    assert got.data == b"old"
    assert (await run(agent, sid, "ls -A /home/wrenn-user | grep -c tmp")).stdout == b"0\n"
