"""Capsule statistics, usage and per-capsule metrics. Registered before the capsule routes so
`/v1/capsules/stats` is not taken for a capsule id.

Per-capsule samples come from the host agent's sampler (hostagent/metrics.py); team series and
usage from the control plane's stats sampler (jobs/periodic.py, services/stats.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from ...errors import BadRequest
from ...schemas.common import error_responses
from ...schemas.metrics import CapsuleMetrics, MetricPoint
from ...services import metrics
from ...services.stats import team_stats, team_usage
from ..deps import DatabaseDep, HostsDep, SettingsDep, TeamDep

router = APIRouter(prefix="/v1/capsules", tags=["capsules"])

StatsRange = Literal["5m", "1h", "6h", "24h", "30d"]
MetricsRange = Literal["5m", "10m", "1h", "2h", "6h", "12h", "24h"]
MAX_USAGE_DAYS = 366


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
    db: DatabaseDep,
    settings: SettingsDep,
    from_: Annotated[dt.date | None, Query(alias="from")] = None,
    to: dt.date | None = None,
) -> dict[str, Any]:
    """Reserved vCPU-minutes and memory MB-minutes of the team per day (UTC)."""
    to = to or dt.datetime.now(dt.UTC).date()
    from_ = from_ or to - dt.timedelta(days=30)
    if from_ > to:
        raise BadRequest("from must not be after to")
    if (to - from_).days > MAX_USAGE_DAYS:
        raise BadRequest(f"at most {MAX_USAGE_DAYS} days at a time")
    interval = dt.timedelta(seconds=settings.stats_sample_interval_sec or 10)
    async with db.sessionmaker() as session:
        days = await team_usage(session, team.team_id, start=from_, end=to, interval=interval)
    return {
        "from": from_,
        "to": to,
        "points": [
            {"date": d.date, "cpu_minutes": d.cpu_minutes, "ram_mb_minutes": d.ram_mb_minutes}
            for d in days
        ],
    }


@router.get(
    "/{id}/metrics",
    operation_id="getCapsuleMetrics",
    summary="CPU, memory and disk samples of a capsule (live while it runs, stored once paused)",
    responses=error_responses(400, 401, 403, 404),
)
async def get_metrics(
    id: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep, range: MetricsRange = "10m"
) -> CapsuleMetrics:
    samples = await metrics.capsule_metrics(db, hosts, team.team_id, id, range)
    return CapsuleMetrics(sandbox_id=id, range=range, points=[MetricPoint.of(s) for s in samples])
