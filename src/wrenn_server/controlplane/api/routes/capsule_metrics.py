"""Capsule statistics, usage and per-capsule metrics. Registered before the capsule routes so
`/v1/capsules/stats` is not taken for a capsule id.

The samplers that fill the series are not built yet: series, usage points and per-capsule
points are empty lists until then, never an error."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from ...errors import NotFound
from ...services import capsules as capsules_svc
from ...services.stats import team_stats
from ..deps import DatabaseDep, TeamDep

router = APIRouter(prefix="/v1/capsules", tags=["capsules"])

StatsRange = Literal["5m", "1h", "6h", "24h", "30d"]
MetricsRange = Literal["5m", "10m", "1h", "2h", "6h", "12h", "24h"]


@router.get("/stats", operation_id="getCapsuleStats")
async def get_stats(team: TeamDep, db: DatabaseDep, range: StatsRange = "1h") -> dict[str, Any]:
    async with db.sessionmaker() as session:
        s = await team_stats(session, team.team_id, range)
    return {
        "range": range,
        "current": {
            "running_count": s.running_count,
            "vcpus_reserved": s.vcpus_reserved,
            "memory_mb_reserved": s.memory_mb_reserved,
            "sampled_at": s.sampled_at,
        },
        "peaks": {
            "running_count": s.peak_running,
            "vcpus": s.peak_vcpus,
            "memory_mb": s.peak_memory_mb,
        },
        "series": {
            "labels": s.labels,
            "running": s.running,
            "vcpus": s.vcpus,
            "memory_mb": s.memory_mb,
        },
    }


@router.get("/usage", operation_id="getCapsuleUsage")
async def get_usage(
    team: TeamDep,
    from_: Annotated[dt.date | None, Query(alias="from")] = None,
    to: dt.date | None = None,
) -> dict[str, Any]:
    to = to or dt.datetime.now(dt.UTC).date()
    from_ = from_ or to - dt.timedelta(days=30)
    return {"from": from_, "to": to, "points": []}


@router.get("/{id}/metrics", operation_id="getCapsuleMetrics")
async def get_metrics(
    id: str, team: TeamDep, db: DatabaseDep, range: MetricsRange = "10m"
) -> dict[str, Any]:
    async with db.sessionmaker() as session:
        sandbox = await capsules_svc.get_capsule(session, team.team_id, id)
    if sandbox.status == "stopped":
        raise NotFound("capsule not found")
    return {"sandbox_id": id, "range": range, "points": []}
