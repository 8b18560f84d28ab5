"""Team capsule statistics and usage.

- *Now* comes from the live capsule rows: running count, and what running and starting capsules
  reserve (paused ones hold no CPU or memory).
- The stats sampler (`jobs/periodic.py`, every 10 s) calls `sample_teams`, which writes one
  `sandbox_metrics_snapshots` row per team that has live capsules, then `purge_snapshots`,
  which drops the rows older than the retention (60 days).
- Series bucket those rows per range (the peak of each bucket; a bucket without rows is zero:
  no live capsules then). Peaks are over the last 30 days.
- Usage per day integrates the reserved vCPUs and memory over time: each snapshot stands for
  the sampling interval that follows it.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Integer, case, cast, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models.capsules import Sandbox, SandboxMetricsSnapshot
from ..db.types import utcnow

# Range -> (span, bucket width).
RANGES = {
    "5m": (dt.timedelta(minutes=5), dt.timedelta(seconds=10)),
    "1h": (dt.timedelta(hours=1), dt.timedelta(minutes=1)),
    "6h": (dt.timedelta(hours=6), dt.timedelta(minutes=5)),
    "24h": (dt.timedelta(hours=24), dt.timedelta(minutes=15)),
    "30d": (dt.timedelta(days=30), dt.timedelta(hours=6)),
}
PEAK_SPAN = dt.timedelta(days=30)
RESERVING = ("running", "starting")


@dataclass
class TeamStats:
    running_count: int
    vcpus_reserved: int
    memory_mb_reserved: int
    sampled_at: dt.datetime
    peak_running: int
    peak_vcpus: int
    peak_memory_mb: int
    labels: list[dt.datetime] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    vcpus: list[int] = field(default_factory=list)
    memory_mb: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class DailyUsage:
    date: dt.date
    cpu_minutes: float
    ram_mb_minutes: float


def _epoch_seconds(session: AsyncSession, column: Any) -> ColumnElement[int]:
    """Seconds since the epoch of a timestamp column, in the session's SQL dialect."""
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.strftime("%s", column), Integer)
    return cast(func.floor(func.extract("epoch", column)), Integer)


async def sample_teams(session: AsyncSession, *, now: dt.datetime | None = None) -> int:
    """Write one snapshot per team with live capsules; the number written."""
    now = now or utcnow()
    reserving = Sandbox.status.in_(RESERVING)
    rows = await session.execute(
        select(
            Sandbox.team_id,
            func.count().filter(Sandbox.status == "running"),
            func.count().filter(Sandbox.status == "paused"),
            func.coalesce(func.sum(case((reserving, Sandbox.vcpus), else_=0)), 0),
            func.coalesce(func.sum(case((reserving, Sandbox.memory_mb), else_=0)), 0),
        )
        .where(Sandbox.status.in_((*RESERVING, "paused")))
        .group_by(Sandbox.team_id)
    )
    snapshots = [
        SandboxMetricsSnapshot(
            team_id=team_id,
            sampled_at=now,
            running_count=int(running),
            paused_count=int(paused),
            vcpus_reserved=int(vcpus),
            memory_mb_reserved=int(memory),
        )
        for team_id, running, paused, vcpus, memory in rows
    ]
    session.add_all(snapshots)
    await session.flush()
    return len(snapshots)


async def purge_snapshots(session: AsyncSession, *, before: dt.datetime) -> None:
    await session.execute(
        delete(SandboxMetricsSnapshot).where(SandboxMetricsSnapshot.sampled_at < before)
    )


async def team_stats(session: AsyncSession, team_id: uuid.UUID, range_: str) -> TeamStats:
    running = await session.scalar(
        select(func.count()).where(Sandbox.team_id == team_id, Sandbox.status == "running")
    )
    active = (Sandbox.team_id == team_id) & Sandbox.status.in_(RESERVING)
    vcpus = await session.scalar(select(func.coalesce(func.sum(Sandbox.vcpus), 0)).where(active))
    memory = await session.scalar(
        select(func.coalesce(func.sum(Sandbox.memory_mb), 0)).where(active)
    )
    now = utcnow()
    snaps = SandboxMetricsSnapshot
    peaks = (
        await session.execute(
            select(
                func.max(snaps.running_count),
                func.max(snaps.vcpus_reserved),
                func.max(snaps.memory_mb_reserved),
            ).where(snaps.team_id == team_id, snaps.sampled_at >= now - PEAK_SPAN)
        )
    ).one()
    stats = TeamStats(
        running_count=running or 0,
        vcpus_reserved=int(vcpus or 0),
        memory_mb_reserved=int(memory or 0),
        sampled_at=now,
        peak_running=max(peaks[0] or 0, running or 0),
        peak_vcpus=max(peaks[1] or 0, int(vcpus or 0)),
        peak_memory_mb=max(peaks[2] or 0, int(memory or 0)),
    )
    await _series(session, stats, team_id, range_, now)
    return stats


async def _series(
    session: AsyncSession, stats: TeamStats, team_id: uuid.UUID, range_: str, now: dt.datetime
) -> None:
    span, width = RANGES[range_]
    step = int(width.total_seconds())
    last = math.floor(now.timestamp() / step)
    first = last - int(span / width) + 1
    snaps = SandboxMetricsSnapshot
    bucket = _epoch_seconds(session, snaps.sampled_at) // step
    rows = await session.execute(
        select(
            bucket,
            func.max(snaps.running_count),
            func.max(snaps.vcpus_reserved),
            func.max(snaps.memory_mb_reserved),
        )
        .where(
            snaps.team_id == team_id,
            snaps.sampled_at >= dt.datetime.fromtimestamp(first * step, dt.UTC),
        )
        .group_by(bucket)
    )
    peaks = {int(b): (int(r), int(v), int(m)) for b, r, v, m in rows}
    for b in range(first, last + 1):
        running, vcpus, memory = peaks.get(b, (0, 0, 0))
        stats.labels.append(dt.datetime.fromtimestamp(b * step, dt.UTC))
        stats.running.append(running)
        stats.vcpus.append(vcpus)
        stats.memory_mb.append(memory)


async def team_usage(
    session: AsyncSession,
    team_id: uuid.UUID,
    *,
    start: dt.date,
    end: dt.date,
    interval: dt.timedelta,
) -> list[DailyUsage]:
    """Reserved vCPU-minutes and memory MB-minutes per day (UTC), `start` to `end` inclusive."""
    snaps = SandboxMetricsSnapshot
    lower = dt.datetime.combine(start, dt.time(), dt.UTC)
    upper = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
    day = _epoch_seconds(session, snaps.sampled_at) // 86400
    rows = await session.execute(
        select(day, func.sum(snaps.vcpus_reserved), func.sum(snaps.memory_mb_reserved))
        .where(snaps.team_id == team_id, snaps.sampled_at >= lower, snaps.sampled_at < upper)
        .group_by(day)
    )
    minutes = interval.total_seconds() / 60
    totals = {int(d): (float(c or 0), float(m or 0)) for d, c, m in rows}
    epoch = dt.date(1970, 1, 1)
    out = []
    current = start
    while current <= end:
        cpu, ram = totals.get((current - epoch).days, (0.0, 0.0))
        out.append(DailyUsage(current, round(cpu * minutes, 2), round(ram * minutes, 2)))
        current += dt.timedelta(days=1)
    return out
