"""Directory watching in a real capsule (gVisor's inotify): the changes commands make, as root and
as the default user, recursive or not; a directory the user cannot list refused; the stream ended
by the directory's removal."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient, WatchCall
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import run

pytestmark = pytest.mark.integration

CREATE, WRITE = pb.FS_EVENT_TYPE_CREATE, pb.FS_EVENT_TYPE_WRITE
REMOVE, RENAME, CHMOD = pb.FS_EVENT_TYPE_REMOVE, pb.FS_EVENT_TYPE_RENAME, pb.FS_EVENT_TYPE_CHMOD


USER = "watcher"
HOME = f"/home/{USER}"


async def _as(agent: AgentClient, sid: str, user: str, cmd: str) -> None:
    res = await run(agent, sid, cmd, user=user)
    assert res.exit_code == 0, res.stderr


async def _with_user(agent: AgentClient, sid: str) -> None:
    await _as(agent, sid, "root", f"useradd -m -s /bin/sh {USER}")


async def _read(call: WatchCall) -> pb.FsEvent | None:
    event = await asyncio.wait_for(call.read(), 30)
    if event == grpc.aio.EOF:
        return None
    assert isinstance(event, pb.FsEvent)
    return event


async def _started(call: WatchCall) -> None:
    first = await _read(call)
    assert first is not None and first.type == pb.FS_EVENT_TYPE_STARTED, first


async def _until(call: WatchCall, kind: int, name: str) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    while (event := await _read(call)) is not None:
        seen.append((event.type, event.name))
        if seen[-1] == (kind, name):
            return seen
    raise AssertionError(f"the stream ended before {(kind, name)}: {seen}")


async def test_changes_as_root_and_as_the_user(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    await _with_user(agent, sid)
    await _as(agent, sid, USER, f"mkdir -p {HOME}/w/sub")
    flat = agent.watch_dir(pb.WatchDirRequest(sandbox_id=sid, path=f"{HOME}/w"))
    deep = agent.watch_dir(pb.WatchDirRequest(sandbox_id=sid, path="w", recursive=True, user=USER))
    try:
        await _started(flat)
        await _started(deep)
        await _as(agent, sid, USER, f"echo one > {HOME}/w/a")
        assert (await _until(deep, CREATE, "a"))[0] == (CREATE, "a")
        await _as(agent, sid, "root", f"echo two >> {HOME}/w/a && chmod 600 {HOME}/w/a")
        await _until(deep, WRITE, "a")
        await _until(deep, CHMOD, "a")
        await _as(agent, sid, USER, f"mv {HOME}/w/a {HOME}/w/b && echo x > {HOME}/w/sub/c")
        seen = await _until(deep, CREATE, "sub/c")
        assert seen.index((RENAME, "a")) < seen.index((CREATE, "b"))
        await _as(
            agent, sid, "root", f"rm {HOME}/w/b && mkdir {HOME}/w/new && touch {HOME}/w/new/d"
        )
        await _until(deep, REMOVE, "b")
        await _until(deep, CREATE, "new/d")
        flat_seen = await _until(flat, CREATE, "new")
        assert (CREATE, "b") in flat_seen and (REMOVE, "b") in flat_seen
        assert not [name for _kind, name in flat_seen if "/" in name], flat_seen
        # The watched directory goes: the stream says so and ends.
        await _as(agent, sid, "root", f"rm -rf {HOME}/w")
        rest = await _until(deep, REMOVE, "")
        assert (REMOVE, "new/d") in rest
        assert await _read(deep) is None
    finally:
        flat.cancel()
        deep.cancel()


async def test_a_directory_the_user_cannot_list_is_refused(
    agent: AgentClient, capsule: pb.Sandbox
) -> None:
    sid = capsule.sandbox_id
    await _with_user(agent, sid)
    await _as(agent, sid, "root", "mkdir -p /srv/private && chmod 700 /srv/private")
    for path, code in [
        ("/srv/private", grpc.StatusCode.PERMISSION_DENIED),
        ("/root", grpc.StatusCode.PERMISSION_DENIED),
        ("/nowhere", grpc.StatusCode.NOT_FOUND),
        ("/etc/hostname", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        call = agent.watch_dir(pb.WatchDirRequest(sandbox_id=sid, path=path, user=USER))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _read(call)
        assert refused.value.code() == code, path
    # root may watch it
    call = agent.watch_dir(pb.WatchDirRequest(sandbox_id=sid, path="/srv/private", user="root"))
    try:
        await _started(call)
    finally:
        call.cancel()
