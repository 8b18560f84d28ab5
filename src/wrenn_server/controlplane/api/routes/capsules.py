"""Capsule routes: lifecycle, exec and processes. Thin: parse, call one service, convert."""

from __future__ import annotations

import signal
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import TypeAdapter

from ...db.session import transaction
from ...schemas.capsules import (
    BackgroundExecResponse,
    Capsule,
    CreateCapsuleRequest,
    ExecRequest,
    ExecResponse,
    ProcessEntry,
    ProcessListResponse,
    UpdateCapsuleRequest,
)
from ...services import capsules as svc
from ...services import processes
from ...services.capsule_listings import key_of
from ...services.capsule_metadata import parse_filter
from ..deps import CapsuleListingsDep, DatabaseDep, HostsDep, SessionDep, SettingsDep, TeamDep

router = APIRouter(prefix="/v1/capsules", tags=["capsules"])

_CAPSULES = TypeAdapter(list[Capsule])


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="createCapsule")
async def create_capsule(
    body: CreateCapsuleRequest, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> Capsule:
    sent = body.model_fields_set  # left out: the team's parking policy decides
    spec = svc.CreateCapsule(
        body.template,
        body.vcpus,
        body.memory_mb,
        body.timeout_sec if "timeout_sec" in sent else None,
        body.disk_size_mb,
        public_ports=tuple(body.public_ports),
        auto_resume=body.auto_resume if "auto_resume" in sent else None,
        metadata=body.metadata or {},
    )
    return Capsule.of(
        await svc.create_capsule(
            db, hosts, team_id=team.team_id, spec=spec, actor=team.principal.actor
        )
    )


@router.get("", operation_id="listCapsules", response_model=list[Capsule])
async def list_capsules(
    team: TeamDep,
    db: DatabaseDep,
    listings: CapsuleListingsDep,
    status: Annotated[
        list[str] | None,
        Query(
            description="Only capsules in these statuses, comma-separated or repeated "
            "(`?status=stopped,error`). Without it, stopped and errored capsules are left out."
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        Query(
            description="Only capsules whose `metadata` has this `key:value`; repeated, every "
            "pair must match (`?metadata=env:prod&metadata=owner:ci`)."
        ),
    ] = None,
) -> Response:
    statuses = {s.strip() for v in status or () for s in v.split(",") if s.strip()} or None
    wanted = parse_filter(metadata or ())

    async def read() -> bytes:
        async with db.sessionmaker() as session:
            found = await svc.list_capsules(session, team.team_id, statuses, wanted)
            return _CAPSULES.dump_json([Capsule.of(s) for s in found])

    body = await listings.get_or_read(key_of(team.team_id, statuses, wanted), read)
    return Response(body, media_type="application/json")


@router.get("/{id}", operation_id="getCapsule")
async def get_capsule(id: str, team: TeamDep, db: DatabaseDep) -> Capsule:
    async with db.sessionmaker() as session:
        return Capsule.of(await svc.get_capsule(session, team.team_id, id))


@router.patch("/{id}", operation_id="updateCapsule")
async def update_capsule(
    id: str, body: UpdateCapsuleRequest, team: TeamDep, session: SessionDep
) -> Capsule:
    async with transaction(session, write=True):
        sandbox = await svc.update_capsule(
            session,
            team.team_id,
            id,
            public_ports=body.public_ports,
            auto_resume=body.auto_resume,
            actor=team.principal.actor,
        )
        return Capsule.of(sandbox)


@router.delete("/{id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="destroyCapsule")
async def destroy_capsule(id: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep) -> None:
    await svc.destroy_capsule(db, hosts, team.team_id, id, actor=team.principal.actor)


@router.post("/{id}/pause", operation_id="pauseCapsule")
async def pause_capsule(id: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep) -> Capsule:
    return Capsule.of(
        await svc.pause_capsule(db, hosts, team.team_id, id, actor=team.principal.actor)
    )


@router.post("/{id}/resume", operation_id="resumeCapsule")
async def resume_capsule(id: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep) -> Capsule:
    return Capsule.of(
        await svc.resume_capsule(db, hosts, team.team_id, id, actor=team.principal.actor)
    )


@router.post("/{id}/ping", status_code=status.HTTP_204_NO_CONTENT, operation_id="pingCapsule")
async def ping_capsule(id: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep) -> None:
    await svc.ping_capsule(db, hosts, team.team_id, id)


@router.post(
    "/{id}/exec",
    operation_id="execCommand",
    responses={202: {"model": BackgroundExecResponse}},
)
async def exec_command(
    id: str,
    body: ExecRequest,
    team: TeamDep,
    db: DatabaseDep,
    hosts: HostsDep,
    settings: SettingsDep,
    response: Response,
) -> ExecResponse | BackgroundExecResponse:
    client = await svc.running_client(db, hosts, team.team_id, id)
    if body.background:
        pid = await processes.start(client, body.to_pb(id))
        response.status_code = status.HTTP_202_ACCEPTED
        return BackgroundExecResponse(
            sandbox_id=id, cmd=body.cmd, pid=pid, tag=body.tag or str(pid)
        )
    res, duration_ms = await processes.run(
        client, body.to_pb(id), body.timeout_sec, settings.exec_max_output_bytes
    )
    return ExecResponse.of(id, body.cmd, res, duration_ms)


@router.get("/{id}/processes", operation_id="listProcesses")
async def list_processes(
    id: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> ProcessListResponse:
    client = await svc.running_client(db, hosts, team.team_id, id)
    return ProcessListResponse(
        processes=[ProcessEntry.of(p) for p in await processes.list_running(client, id)]
    )


@router.delete(
    "/{id}/processes/{selector}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="killProcess",
)
async def kill_process(
    id: str,
    selector: str,
    team: TeamDep,
    db: DatabaseDep,
    hosts: HostsDep,
    signal_name: Annotated[str, Query(alias="signal", pattern="^(SIGKILL|SIGTERM)$")] = "SIGKILL",
) -> None:
    client = await svc.running_client(db, hosts, team.team_id, id)
    await processes.kill(client, id, selector, signal.Signals[signal_name])
