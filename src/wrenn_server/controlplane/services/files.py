"""A running capsule's files, through its host agent. Reads and writes are streamed end to end:
the control plane never holds a whole file."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from ...agentproto.client import FileChunks
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from ..agents.rpc import agent_errors
from ..db.session import Database
from ..schemas.capsules import FileEntry, ListDirRequest, ListDirResponse
from .capsules import Hosts, running_client


class Upload(Protocol):
    """A file arriving in a request body: its path first, then its bytes. `file_chunks()` raises
    (and keeps the error in `error`) when the body turns out to be wrong."""

    error: Exception | None

    async def path(self) -> str: ...

    def file_chunks(self) -> AsyncIterator[bytes]: ...


async def write(
    db: Database,
    hosts: Hosts,
    team_id: uuid.UUID,
    wire_id: str,
    open_upload: Callable[[], Upload],
) -> None:
    """Stream the upload to the agent as it arrives; a body that goes wrong midway writes
    nothing (the agent keeps nothing of a cancelled write). The upload is opened once the
    capsule is known to be running: a missing capsule is reported before a bad body."""
    client = await running_client(db, hosts, team_id, wire_id)
    upload = open_upload()
    path = await upload.path()
    header = pb.WriteFileStreamRequest.Header(sandbox_id=wire_id, path=path)
    try:
        with agent_errors():
            await client.write_file_stream(header, upload.file_chunks())
    except asyncio.CancelledError:
        # gRPC cancels the write when the body turns out to be wrong: report that instead.
        if upload.error is None:
            raise
    if upload.error is not None:
        raise upload.error


async def read(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, path: str
) -> AsyncIterator[bytes]:
    """The file's bytes as the agent sends them. The first chunk is read before this returns,
    so a missing file is still an error the caller can answer (404) before its response
    starts."""
    client = await running_client(db, hosts, team_id, wire_id)
    call = client.read_file_stream(pb.FileRef(sandbox_id=wire_id, path=path))
    try:
        with agent_errors():
            first = await call.read()
    except BaseException:
        call.cancel()
        raise
    return _rest(call, first)


async def _rest(call: FileChunks, first: object) -> AsyncIterator[bytes]:
    # read() throughout: a gRPC call may not be both read() and iterated.
    try:
        msg = first
        while isinstance(msg, pb.FileChunk):
            yield msg.data
            msg = await call.read()
    finally:
        call.cancel()  # a no-op once done; stops the agent if the client went away


async def list_dir(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, body: ListDirRequest
) -> ListDirResponse:
    client = await running_client(db, hosts, team_id, wire_id)
    request = pb.ListDirRequest(
        sandbox_id=wire_id,
        path=body.path,
        depth=max(body.depth, 1),
        limit=body.limit,
        after=body.cursor or "",
    )
    with agent_errors():
        res = await client.list_dir(request)
    # Never more than asked for, whatever the host sends.
    entries = [FileEntry.of(e) for e in res.entries[: body.limit]]
    truncated = res.truncated or len(res.entries) > body.limit
    return ListDirResponse(
        entries=entries,
        truncated=truncated,
        next_cursor=(entries[-1].path if entries else None) if truncated else None,
    )


async def make_dir(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, path: str
) -> FileEntry:
    client = await running_client(db, hosts, team_id, wire_id)
    with agent_errors():
        entry = await client.make_dir(pb.FileRef(sandbox_id=wire_id, path=path))
    return FileEntry.of(entry)


async def remove(db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, path: str) -> None:
    client = await running_client(db, hosts, team_id, wire_id)
    with agent_errors():
        await client.remove(pb.FileRef(sandbox_id=wire_id, path=path))
