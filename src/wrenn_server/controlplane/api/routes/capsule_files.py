"""File routes of a capsule. Uploads and downloads are streamed end to end: the control plane
never holds a whole file (multipart bodies are parsed as they arrive)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import StreamingResponse

from ...schemas.capsules import ListDirRequest, ListDirResponse, MakeDirResponse, PathRequest
from ...services import files
from ..deps import DatabaseDep, HostsDep, TeamDep
from ..multipart import MultipartUpload

router = APIRouter(prefix="/v1/capsules/{id}/files", tags=["files"])


@router.post("/write", status_code=status.HTTP_204_NO_CONTENT, operation_id="writeFile")
async def write_file(
    id: str, request: Request, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> None:
    await files.write(db, hosts, team.team_id, id, lambda: MultipartUpload(request))


@router.post(
    "/stream/write", status_code=status.HTTP_204_NO_CONTENT, operation_id="streamWriteFile"
)
async def stream_write_file(
    id: str, request: Request, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> None:
    await files.write(db, hosts, team.team_id, id, lambda: MultipartUpload(request))


@router.post("/read", operation_id="readFile", response_class=StreamingResponse)
async def read_file(
    id: str, body: PathRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> StreamingResponse:
    data = await files.read(db, hosts, team.team_id, id, body.path)
    return StreamingResponse(data, media_type="application/octet-stream")


@router.post("/stream/read", operation_id="streamReadFile", response_class=StreamingResponse)
async def stream_read_file(
    id: str, body: PathRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> StreamingResponse:
    data = await files.read(db, hosts, team.team_id, id, body.path)
    return StreamingResponse(data, media_type="application/octet-stream")


@router.post("/list", operation_id="listDir")
async def list_dir(
    id: str, body: ListDirRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> ListDirResponse:
    return await files.list_dir(db, hosts, team.team_id, id, body)


@router.post("/mkdir", operation_id="makeDir")
async def make_dir(
    id: str, body: PathRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> MakeDirResponse:
    return MakeDirResponse(entry=await files.make_dir(db, hosts, team.team_id, id, body.path))


@router.post("/remove", status_code=status.HTTP_204_NO_CONTENT, operation_id="removeFile")
async def remove(
    id: str, body: PathRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> None:
    await files.remove(db, hosts, team.team_id, id, body.path)
