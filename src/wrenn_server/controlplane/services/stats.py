"""Capsule statistics for a team: what is reserved now (from the live capsule rows), peaks and
series from the sampled `sandbox_metrics_snapshots` (written by the metrics sampler)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models.capsules import Sandbox, SandboxMetricsSnapshot
from ..db.types import utcnow

RANGES = {
    "5m": dt.timedelta(minutes=5),
    "1h": dt.timedelta(hours=1),
    "6h": dt.timedelta(hours=6),
    "24h": dt.timedelta(hours=24),
    "30d": dt.timedelta(days=30),
}


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


async def team_stats(session: AsyncSession, team_id: uuid.UUID, range_: str) -> TeamStats:
    running = await session.scalar(
        select(func.count()).where(Sandbox.team_id == team_id, Sandbox.status == "running")
    )
    # CPU is reserved by running and starting capsules only; paused ones hold no CPU.
    active = (Sandbox.team_id == team_id) & Sandbox.status.in_(("running", "starting"))
    vcpus = await session.scalar(select(func.coalesce(func.sum(Sandbox.vcpus), 0)).where(active))
    memory = await session.scalar(
        select(func.coalesce(func.sum(Sandbox.memory_mb), 0)).where(active)
    )
    now = utcnow()
    month = now - RANGES["30d"]
    snaps = SandboxMetricsSnapshot
    peaks = (
        await session.execute(
            select(
                func.max(snaps.running_count),
                func.max(snaps.vcpus_reserved),
                func.max(snaps.memory_mb_reserved),
            ).where(snaps.team_id == team_id, snaps.sampled_at >= month)
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
    rows = await session.scalars(
        select(snaps)
        .where(snaps.team_id == team_id, snaps.sampled_at >= now - RANGES[range_])
        .order_by(snaps.sampled_at)
    )
    for row in rows:
        stats.labels.append(row.sampled_at)
        stats.running.append(row.running_count)
        stats.vcpus.append(row.vcpus_reserved)
        stats.memory_mb.append(row.memory_mb_reserved)
    return stats
