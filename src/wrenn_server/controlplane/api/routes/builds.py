"""`/v1/admin/builds`: template builds (platform admins). A build is submitted as JSON, or as
multipart/form-data with the same fields plus an `archive` file for COPY steps."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from ... import ids
from ...errors import BadRequest
from ...schemas.builds import BuildResponse, CreateBuildRequest
from ...schemas.common import error_responses
from ...services import builds
from ..deps import BuildsDep, CurrentAdmin, DatabaseDep, SettingsDep

router = APIRouter(prefix="/v1/admin/builds", tags=["admin"])

_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": CreateBuildRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "The CreateBuildRequest fields as form fields (recipe as "
                    "text), plus the archive COPY steps read from.",
                    "properties": {"archive": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid value')}" if where else str(first.get("msg"))


async def _parse(request: Request) -> tuple[CreateBuildRequest, UploadFile | None]:
    content_type = request.headers.get("content-type", "")
    upload: UploadFile | None = None
    try:
        if content_type.startswith("multipart/form-data"):
            # The body's size is bounded as it arrives (api/body_limits.py); the archive is
            # spooled to disk, never held in memory.
            form = await request.form(max_files=1, max_fields=20)
            fields: dict[str, Any] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key != "archive":
                        raise BadRequest(f"unexpected file field {key!r}")
                    upload = value
                else:
                    fields[key] = value
            body = CreateBuildRequest.model_validate(fields)
        else:
            body = CreateBuildRequest.model_validate(await request.json())
    except ValidationError as e:
        raise BadRequest(_validation_message(e)) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the body must be JSON or multipart/form-data") from None
    return body, upload


@router.post(
    "",
    operation_id="adminCreateBuild",
    status_code=status.HTTP_201_CREATED,
    summary="Queue a template build (platform admins)",
    responses=error_responses(400, 401, 403, 409, 503),
    openapi_extra=_REQUEST_BODY,
)
async def create_build(
    request: Request,
    principal: CurrentAdmin,
    db: DatabaseDep,
    workers: BuildsDep,
    settings: SettingsDep,
) -> BuildResponse:
    body, upload = await _parse(request)
    try:
        build = await builds.create_build(
            db,
            workers.queue,
            principal=principal,
            request=body,
            upload=upload.file if upload else None,
            archives=workers.archives,
            max_archive_bytes=workers.max_archive_bytes,
            default_base=settings.base_template,
        )
    finally:
        if upload is not None:
            await upload.close()
    return BuildResponse.of(build)


@router.get(
    "",
    operation_id="adminListBuilds",
    summary="List template builds, newest first (platform admins)",
    responses=error_responses(401, 403),
)
async def list_builds(principal: CurrentAdmin, db: DatabaseDep) -> list[BuildResponse]:
    return [BuildResponse.of(b) for b in await builds.list_builds(db)]


@router.get(
    "/{id}",
    operation_id="adminGetBuild",
    summary="A template build with its progress and per-step logs (platform admins)",
    responses=error_responses(400, 401, 403, 404),
)
async def get_build(id: str, principal: CurrentAdmin, db: DatabaseDep) -> BuildResponse:
    build = await builds.get_build(db, ids.BUILD.parse(id, not_found=True))
    return BuildResponse.of(build)


@router.post(
    "/{id}/cancel",
    operation_id="adminCancelBuild",
    summary="Cancel a queued or running template build (platform admins)",
    responses=error_responses(400, 401, 403, 404, 409),
)
async def cancel_build(id: str, principal: CurrentAdmin, db: DatabaseDep) -> BuildResponse:
    build_id = ids.BUILD.parse(id, not_found=True)
    return BuildResponse.of(await builds.cancel_build(db, principal=principal, build_id=build_id))
