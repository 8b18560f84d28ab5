"""File routes of a capsule. Uploads and downloads are streamed end to end: the control plane
never holds a whole file (multipart bodies are parsed as they arrive)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from fastapi import APIRouter, Request, status
from fastapi.responses import StreamingResponse

from ....agentproto.client import AgentClient
from ....proto.hostagent.v1 import hostagent_pb2 as pb
from ...hosts.rpc import agent_errors
from ...schemas.capsules import (
    FileEntry,
    ListDirRequest,
    ListDirResponse,
    MakeDirResponse,
    PathRequest,
)
from ...services import capsules as svc
from ..deps import DatabaseDep, HostsDep, TeamDep
from ..multipart import MultipartUpload

router = APIRouter(prefix="/v1/capsules/{id}/files", tags=["files"])


@router.post("/write", status_code=status.HTTP_204_NO_CONTENT, operation_id="writeFile")
async def write_file(
    id: str, request: Request, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> None:
    client = await svc.running_client(db, hosts, team.team_id, id)
    await _upload(client, id, request)


@router.post(
    "/stream/write", status_code=status.HTTP_204_NO_CONTENT, operation_id="streamWriteFile"
)
async def stream_write_file(
    id: str, request: Request, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> None:
    client = await svc.running_client(db, hosts, team.team_id, id)
    await _upload(client, id, request)


@router.post("/read", operation_id="readFile", response_class=StreamingResponse)
async def read_file(
    id: str, body: PathRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> StreamingResponse:
    client = await svc.running_client(db, hosts, team.team_id, id)
    return await _download(client, id, body.path)


@router.post("/stream/read", operation_id="streamReadFile", response_class=StreamingResponse)
async def stream_read_file(
    id: str, body: PathRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> StreamingResponse:
    client = await svc.running_client(db, hosts, team.team_id, id)
    return await _download(client, id, body.path)


@router.post("/list", operation_id="listDir")
async def list_dir(
    id: str, body: ListDirRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> ListDirResponse:
    client = await svc.running_client(db, hosts, team.team_id, id)
    request = pb.ListDirRequest(
        sandbox_id=id,
        path=body.path,
        depth=max(body.depth, 1),
        limit=body.limit,
        after=body.cursor or "",
    )
    with agent_errors():
        res = await client.call("ListDir", request)
    # Never more than asked for, whatever the host sends.
    entries = [FileEntry.of(e) for e in res.entries[: body.limit]]
    truncated = res.truncated or len(res.entries) > body.limit
    return ListDirResponse(
        entries=entries,
        truncated=truncated,
        next_cursor=(entries[-1].path if entries else None) if truncated else None,
    )


@router.post("/mkdir", operation_id="makeDir")
async def make_dir(
    id: str, body: PathRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> MakeDirResponse:
    client = await svc.running_client(db, hosts, team.team_id, id)
    with agent_errors():
        entry = await client.call("MakeDir", pb.FileRef(sandbox_id=id, path=body.path))
    return MakeDirResponse(entry=FileEntry.of(entry))


@router.post("/remove", status_code=status.HTTP_204_NO_CONTENT, operation_id="removeFile")
async def remove(
    id: str, body: PathRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> None:
    client = await svc.running_client(db, hosts, team.team_id, id)
    with agent_errors():
        await client.call("Remove", pb.FileRef(sandbox_id=id, path=body.path))


async def _download(client: AgentClient, wire_id: str, path: str) -> StreamingResponse:
    call = client.stream("ReadFileStream", pb.FileRef(sandbox_id=wire_id, path=path))
    # The first chunk comes before the response starts, so a missing file is still a 404.
    try:
        with agent_errors():
            first = await call.read()
    except BaseException:
        call.cancel()
        raise

    async def body() -> AsyncIterator[bytes]:
        # read() throughout: a gRPC call may not be both read() and iterated.
        try:
            msg = first
            while msg is not grpc.aio.EOF:
                yield msg.data
                msg = await call.read()
        finally:
            call.cancel()  # a no-op once done; stops the agent if the client went away

    return StreamingResponse(body(), media_type="application/octet-stream")


async def _upload(client: AgentClient, wire_id: str, request: Request) -> None:
    """Stream the `file` field of a multipart body to the agent as it arrives."""
    upload = MultipartUpload(request)
    path = await upload.path()
    try:
        with agent_errors():
            await client.write_stream(wire_id, path, upload.file_chunks())
    except asyncio.CancelledError:
        # gRPC cancels the write when the body turns out to be wrong: report that instead.
        if upload.error is None:
            raise
    if upload.error is not None:
        raise upload.error
