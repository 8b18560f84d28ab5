"""E2B's snapshot calls (create, list, delete) on Wrenn's snapshot templates. Thin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from ...schemas import e2b as wire
from ...services import e2b_snapshots as svc
from ..deps import DatabaseDep, HostsDep, TeamDep
from .e2b_sandboxes import SiteDep

router = APIRouter(tags=["e2b"], include_in_schema=False)


@router.post("/sandboxes/{sandbox_id}/snapshots", status_code=status.HTTP_201_CREATED)
async def create_snapshot(
    sandbox_id: str,
    team: TeamDep,
    db: DatabaseDep,
    hosts: HostsDep,
    site: SiteDep,
    body: wire.SnapshotRequest | None = None,
) -> wire.SnapshotInfo:
    name = await svc.create(
        db,
        hosts,
        site,
        team.team_id,
        sandbox_id,
        body.name if body is not None else None,
        actor=team.principal.actor,
    )
    return wire.SnapshotInfo(snapshot_id=name, names=[name])


@router.get("/snapshots")
async def list_snapshots(
    team: TeamDep,
    db: DatabaseDep,
    response: Response,
    sandbox_id: Annotated[str | None, Query(alias="sandboxID")] = None,
    name: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=svc.MAX_LIMIT)] = None,
    next_token: Annotated[str | None, Query(alias="nextToken")] = None,
) -> list[wire.SnapshotInfo]:
    page = await svc.list_page(
        db, team.team_id, sandbox_id=sandbox_id, name=name, limit=limit, next_token=next_token
    )
    if page.next_token:
        response.headers["X-Next-Token"] = page.next_token
    return [wire.SnapshotInfo(snapshot_id=n, names=[n]) for n in page.names]


@router.delete("/templates/{snapshot_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_snapshot(
    snapshot_id: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep
) -> None:
    await svc.delete_snapshot(db, hosts, team.team_id, snapshot_id, actor=team.principal.actor)
