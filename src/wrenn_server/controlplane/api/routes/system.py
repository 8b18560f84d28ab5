"""Service routes outside `/v1`: health and the OpenAPI document as YAML."""

from __future__ import annotations

import logging

import yaml
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from ...errors import ServiceUnavailable
from ..deps import DatabaseDep

router = APIRouter(tags=["system"])
log = logging.getLogger("wrenn.controlplane")


class Health(BaseModel):
    status: str
    database: str


@router.get("/health", operation_id="health", summary="Liveness and database reachability")
async def health(db: DatabaseDep) -> Health:
    try:
        await db.ping()
    except Exception as exc:
        log.warning("health check: database unreachable: %s", exc)
        raise ServiceUnavailable("database unreachable") from None
    return Health(status="ok", database=db.dialect)


@router.get("/openapi.yaml", include_in_schema=False)
async def openapi_yaml(request: Request) -> Response:
    document = request.app.openapi()
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return Response(body, media_type="application/yaml")
