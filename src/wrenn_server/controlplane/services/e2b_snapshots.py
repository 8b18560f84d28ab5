"""E2B snapshots and metrics on Wrenn's: an E2B snapshot is a snapshot template of the team
(its `snapshotID` is the template's name, so `Sandbox.create(snapshot_id)` starts from it), and
E2B's metrics are the capsule's samples with its size."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select

from .. import ids
from ..db.models.capsules import Sandbox, Template
from ..db.models.e2b import E2bSnapshot
from ..db.session import Database, transaction
from ..errors import BadRequest, NotFound
from . import audit, capsules, e2b_sandboxes, metrics, snapshots
from .capsules import Hosts

DEFAULT_LIMIT = 100
MAX_LIMIT = 100


async def create(
    db: Database,
    hosts: Hosts,
    site: e2b_sandboxes.Site,
    team_id: uuid.UUID,
    wire_id: str,
    name: str | None,
    *,
    actor: audit.Actor,
) -> str:
    """Snapshot the sandbox into a new snapshot template of the team; its name (the
    snapshotID). A running sandbox runs on afterwards, as E2B's does (Wrenn's snapshot leaves
    it paused: it is resumed)."""
    sandbox, row = await e2b_sandboxes.find(db, team_id, wire_id)
    was_running = sandbox.status == "running"
    template = await snapshots.create_snapshot(
        db, hosts, team_id=team_id, wire_id=wire_id, name=name, overwrite=False, actor=actor
    )
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.merge(E2bSnapshot(team_id=team_id, name=template.name, sandbox_id=sandbox.id))
    if was_running:
        await capsules.resume_capsule(
            db, hosts, team_id, wire_id, actor=actor, env=row.env if row is not None else None
        )
    return template.name


@dataclass(frozen=True)
class SnapshotPage:
    names: list[str]
    next_token: str | None


async def list_page(
    db: Database,
    team_id: uuid.UUID,
    *,
    sandbox_id: str | None,
    name: str | None,
    limit: int | None,
    next_token: str | None,
) -> SnapshotPage:
    """The team's own snapshot templates, newest first; with `sandbox_id`, those taken from it
    through this API."""
    async with db.sessionmaker() as session:
        query = select(Template.name).where(
            Template.team_id == team_id, Template.type == "snapshot"
        )
        if sandbox_id is not None:
            source = ids.SANDBOX.parse(sandbox_id, not_found=True)
            query = query.join(
                E2bSnapshot, (E2bSnapshot.team_id == team_id) & (E2bSnapshot.name == Template.name)
            ).where(E2bSnapshot.sandbox_id == source)
        if name is not None:
            query = query.where(Template.name == name)
        found = list(
            await session.scalars(query.order_by(Template.created_at.desc(), Template.name))
        )
    if next_token:
        if next_token not in found:
            raise BadRequest("invalid nextToken")
        found = found[found.index(next_token) + 1 :]
    size = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
    page = found[:size]
    return SnapshotPage(page, page[-1] if len(found) > size and page else None)


async def delete_snapshot(
    db: Database, hosts: Hosts, team_id: uuid.UUID, name: str, *, actor: audit.Actor
) -> None:
    """Delete one of the team's snapshot templates; anything else by that name (a platform
    or built template, another team's) is E2B's 404 here."""
    async with db.sessionmaker() as session:
        own = await session.scalar(
            select(Template.name).where(
                Template.team_id == team_id, Template.name == name, Template.type == "snapshot"
            )
        )
    if own is None:
        raise NotFound(f"snapshot {name!r} not found")
    await snapshots.delete_snapshot(
        db, hosts, team_id=team_id, name=name, is_admin=False, actor=actor
    )
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            delete(E2bSnapshot).where(E2bSnapshot.team_id == team_id, E2bSnapshot.name == name)
        )


@dataclass(frozen=True)
class Metric:
    ts: dt.datetime
    vcpus: int
    cpu_pct: float
    mem_used: int
    mem_total: int
    disk_used: int
    disk_total: int


def _range_for(start: dt.datetime | None, now: dt.datetime) -> str:
    """The smallest of the metrics ranges that reaches back to `start` (the last 10 minutes
    without one)."""
    if start is None:
        return "10m"
    for name, (_tier, span) in metrics.RANGES.items():
        if now - span <= start:
            return name
    return "24h"


def _metric(sandbox: Sandbox, sample: metrics.MetricSample) -> Metric:
    return Metric(
        ts=sample.ts,
        vcpus=sandbox.vcpus,
        cpu_pct=sample.cpu_pct,
        mem_used=sample.mem_bytes,
        mem_total=sandbox.memory_mb << 20,
        disk_used=sample.disk_bytes,
        disk_total=sandbox.disk_size_mb << 20,
    )


async def sandbox_metrics(
    db: Database,
    hosts: Hosts,
    team_id: uuid.UUID,
    wire_id: str,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> list[Metric]:
    """The sandbox's samples between `start` and `end` (the last 10 minutes by default)."""
    sandbox, _ = await e2b_sandboxes.find(db, team_id, wire_id)
    now = dt.datetime.now(dt.UTC)
    samples = await metrics.capsule_metrics(db, hosts, team_id, wire_id, _range_for(start, now))
    return [
        _metric(sandbox, s)
        for s in samples
        if (start is None or s.ts >= start) and (end is None or s.ts <= end)
    ]


async def latest_metrics(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_ids: Sequence[str]
) -> dict[str, Metric]:
    """The newest sample of each running sandbox named (others are left out)."""
    if len(wire_ids) > e2b_sandboxes.MAX_METRIC_IDS:
        raise BadRequest(f"at most {e2b_sandboxes.MAX_METRIC_IDS} sandbox ids")
    latest: dict[str, Metric] = {}
    for wire_id in dict.fromkeys(wire_ids):
        try:
            sandbox, _ = await e2b_sandboxes.find(db, team_id, wire_id)
        except NotFound:
            continue
        if sandbox.status != "running":
            continue
        samples = await metrics.capsule_metrics(db, hosts, team_id, wire_id, "5m")
        if samples:
            latest[wire_id] = _metric(sandbox, samples[-1])
    return latest
