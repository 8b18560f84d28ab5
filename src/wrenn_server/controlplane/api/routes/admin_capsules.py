"""`/v1/admin/capsules/{id}...`: platform admins' own capsules, in the platform team, so they can
prepare platform templates by hand (create, exec, files, processes, then snapshot into a
platform template every team can start from).

The routes are the team capsule and file routes themselves, mounted again under this prefix with
one dependency swapped: the team they act in is the platform team, and the caller must be a
platform admin's user session (re-checked in the database; API keys are refused). So they behave
exactly as the team routes do. The list is `GET /v1/admin/capsules` (every team's, or
`?team_id=` the platform's). The streams (exec stream, PTY, reattaching to a process) are the
team streams' sessions, opened by `api/ws.open_capsule` for the platform team.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, WebSocket, status
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from ... import ids
from ...errors import Conflict
from ...schemas.capsules import TemplateOut
from ...schemas.common import error_responses
from ...services import snapshots, streams
from ..deps import CurrentAdmin, DatabaseDep, HostsDep, SettingsDep, TeamContext
from ..ws import SocketChannel, close, open_capsule
from . import capsule_files, capsules

PREFIX = "/v1/admin/capsules"

router = APIRouter(tags=["admin"])


async def _platform_team(principal: CurrentAdmin) -> TeamContext:
    return TeamContext(principal, ids.PLATFORM_TEAM_ID)


PlatformTeam = Annotated[TeamContext, Depends(_platform_team)]


def _in_platform_team(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """The endpoint with its `team` parameter resolved as the platform team (the rest of its
    signature, evaluated, unchanged)."""
    signature = inspect.signature(endpoint, eval_str=True)
    params = [
        p.replace(annotation=PlatformTeam) if p.name == "team" else p
        for p in signature.parameters.values()
    ]
    assert any(p.name == "team" for p in params), endpoint

    async def platform_endpoint(*args: Any, **kwargs: Any) -> Any:
        return await endpoint(*args, **kwargs)

    platform_endpoint.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    platform_endpoint.__name__ = f"admin_{endpoint.__name__}"
    platform_endpoint.__doc__ = endpoint.__doc__
    return platform_endpoint


def _mount(source: APIRouter, *, skip: set[tuple[str, str]]) -> None:
    for route in source.routes:
        if not isinstance(route, APIRoute):
            continue
        path = PREFIX + route.path.removeprefix("/v1/capsules")
        methods = route.methods or set()
        if any((m, route.path) in skip for m in methods):
            continue
        operation = route.operation_id or route.name
        router.add_api_route(
            path,
            _in_platform_team(route.endpoint),
            methods=sorted(methods),
            status_code=route.status_code,
            response_model=route.response_model,
            response_class=route.response_class,
            responses=route.responses,
            summary=route.summary,
            description=route.description,
            operation_id="admin" + operation[:1].upper() + operation[1:],
            name=f"admin_{route.name}",
        )


# The team list is `GET /v1/admin/capsules` (admin.py), across teams.
_mount(capsules.router, skip={("GET", "/v1/capsules")})
_mount(capsule_files.router, skip=set())


class PlatformSnapshotRequest(BaseModel):
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="The platform template's name (generated if left out); a platform "
        "template of that name is replaced, except the base template.",
    )


@router.post(
    PREFIX + "/{id}/snapshot",
    status_code=status.HTTP_201_CREATED,
    operation_id="adminSnapshotCapsule",
    summary="Snapshot a platform capsule into a platform template every team can start from "
    "(platform admins)",
    responses=error_responses(400, 401, 403, 404, 409),
)
async def snapshot_capsule(
    id: str,
    body: PlatformSnapshotRequest,
    team: PlatformTeam,
    db: DatabaseDep,
    hosts: HostsDep,
    settings: SettingsDep,
) -> TemplateOut:
    if body.name == settings.base_template:
        raise Conflict(f"{body.name!r} is the platform's base template: it cannot be replaced")
    template = await snapshots.create_snapshot(
        db,
        hosts,
        team_id=team.team_id,
        wire_id=id,
        name=body.name,
        overwrite=True,
        actor=team.principal.actor,
    )
    return TemplateOut.of(template, base_template=settings.base_template)


@router.websocket(PREFIX + "/{id}/exec/stream", name="adminExecStream")
async def exec_stream(websocket: WebSocket, id: str) -> None:
    client = await open_capsule(websocket, id, platform=True)
    if client is None:
        return
    await close(websocket, await streams.exec_session(SocketChannel(websocket), client, id))


@router.websocket(PREFIX + "/{id}/pty", name="adminPtySession")
async def pty_session(websocket: WebSocket, id: str) -> None:
    client = await open_capsule(websocket, id, pty=True, platform=True)
    if client is None:
        return
    await close(websocket, await streams.pty_session(SocketChannel(websocket), client, id))


@router.websocket(PREFIX + "/{id}/processes/{selector}/stream", name="adminConnectProcess")
async def connect_process(websocket: WebSocket, id: str, selector: str) -> None:
    client = await open_capsule(websocket, id, sends_first=False, platform=True)
    if client is None:
        return
    channel = SocketChannel(websocket)
    await close(websocket, await streams.attach_session(channel, client, id, selector))
