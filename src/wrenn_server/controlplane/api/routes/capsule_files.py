"""File routes of a capsule. Uploads and downloads are streamed end to end: the control plane
never holds a whole file (multipart bodies are parsed as they arrive)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc
from fastapi import APIRouter, Request, status
from fastapi.responses import StreamingResponse
from python_multipart.multipart import MultipartParser, parse_options_header

from ....hostagent.client import AgentClient
from ....proto.hostagent.v1 import hostagent_pb2 as pb
from ...errors import BadRequest
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

router = APIRouter(prefix="/v1/capsules/{id}/files", tags=["files"])

_END = object()


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
    request = pb.ListDirRequest(sandbox_id=id, path=body.path, depth=max(body.depth, 1))
    with agent_errors():
        res = await client.call("ListDir", request)
    return ListDirResponse(entries=[FileEntry.of(e) for e in res.entries])


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
    with agent_errors():
        first = await call.read()

    async def body() -> AsyncIterator[bytes]:
        if first is grpc.aio.EOF:
            return
        yield first.data
        async for msg in call:
            yield msg.data

    return StreamingResponse(body(), media_type="application/octet-stream")


async def _upload(client: AgentClient, wire_id: str, request: Request) -> None:
    """Parse `path` and `file` from a multipart body as it streams in, and stream the file's
    bytes to the agent."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadRequest("expected a multipart/form-data body with 'path' and 'file'")
    chunks: asyncio.Queue[object] = asyncio.Queue(maxsize=64)
    fields = _MultipartFields(chunks)
    parser = MultipartParser(boundary, cast(Any, fields.callbacks()))
    path_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def got_path(path: str) -> None:
        if not path_ready.done():
            path_ready.set_result(path)

    fields.on_path = got_path

    async def feed() -> None:
        async for data in request.stream():
            parser.write(data)
            await fields.flush()
        parser.finalize()
        await fields.flush()
        await chunks.put(_END)
        if not path_ready.done():
            path_ready.set_exception(BadRequest("the 'path' field must come before 'file'"))

    feeder = asyncio.create_task(feed())
    try:
        path = await path_ready

        async def file_chunks() -> AsyncIterator[bytes]:
            while (item := await chunks.get()) is not _END:
                assert isinstance(item, bytes)
                yield item

        with agent_errors():
            await client.write_stream(wire_id, path, file_chunks())
        await feeder
        if not fields.saw_file:
            raise BadRequest("missing the 'file' field")
    finally:
        feeder.cancel()


class _MultipartFields:
    """Callbacks for the streaming parser: collects the small `path` field, forwards the bytes
    of the `file` field to a queue."""

    def __init__(self, chunks: asyncio.Queue[object]) -> None:
        self.chunks = chunks
        self.on_path: Callable[[str], None] = lambda _path: None
        self.saw_file = False
        self._header_name = b""
        self._disposition = b""
        self._part: str | None = None
        self._path = bytearray()
        self._pending: list[bytes] = []

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._disposition, self._header_name, self._part = b"", b"", None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name = data[start:end].lower()

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        if self._header_name == b"content-disposition":
            self._disposition += data[start:end]

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._disposition)
        self._part = params.get(b"name", b"").decode()
        if self._part == "file":
            self.saw_file = True

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "path":
            self._path += data[start:end]
        elif self._part == "file":
            self._pending.append(bytes(data[start:end]))

    def _end(self) -> None:
        if self._part == "path":
            self.on_path(self._path.decode())

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        for piece in pending:
            await self.chunks.put(piece)
