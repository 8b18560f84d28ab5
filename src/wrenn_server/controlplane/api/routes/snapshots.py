"""Snapshot template routes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from ...schemas.capsules import CreateSnapshotRequest, TemplateOut
from ...services import snapshots as svc
from ..deps import DatabaseDep, HostsDep, SettingsDep, TeamDep

router = APIRouter(prefix="/v1/snapshots", tags=["snapshots"])


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="createSnapshot")
async def create_snapshot(
    body: CreateSnapshotRequest,
    team: TeamDep,
    db: DatabaseDep,
    hosts: HostsDep,
    settings: SettingsDep,
    overwrite: Annotated[Literal["true"] | None, Query()] = None,
) -> TemplateOut:
    template = await svc.create_snapshot(
        db,
        hosts,
        team_id=team.team_id,
        wire_id=body.sandbox_id,
        name=body.name,
        overwrite=overwrite == "true",
        actor=team.principal.actor,
    )
    return TemplateOut.of(template, base_template=settings.base_template)


@router.get("", operation_id="listSnapshots")
async def list_snapshots(
    team: TeamDep,
    db: DatabaseDep,
    settings: SettingsDep,
    type: Literal["base", "snapshot"] | None = None,
) -> list[TemplateOut]:
    found = await svc.list_templates(db, team.team_id, type)
    return [TemplateOut.of(t, base_template=settings.base_template) for t in found]


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, operation_id="deleteSnapshot")
async def delete_snapshot(
    name: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep, settings: SettingsDep
) -> None:
    await svc.delete_snapshot(
        db,
        hosts,
        team_id=team.team_id,
        name=name,
        is_admin=team.is_admin,
        actor=team.principal.actor,
        protected=settings.base_template,
    )
