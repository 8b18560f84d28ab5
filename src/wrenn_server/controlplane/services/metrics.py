"""Per-capsule metrics: live from the host agent's ring buffers while a capsule runs, from the
database once it is paused, none once it is stopped.

The agent keeps a capsule's samples while it is paused and drops them on destroy, so the
control plane copies them into `sandbox_metrics` when a capsule is paused (every tier, by the
caller or, for the agent's own auto-pauses, by the reconciler) and just before it is destroyed
(the 24 h tier only, kept for accounting). A tier the agent has samples of replaces the stored
copy (an agent restarted since the last pause has none: the copy stays). Copying is best effort:
a failure is logged and never fails the pause or destroy that asked for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from sqlalchemy import delete, select

from ...agentproto.client import AgentClient
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..agents.rpc import agent_errors
from ..db.models.capsules import SandboxMetric
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import NotFound
from . import capsules  # capsules imports this module too: attributes are used at call time

if TYPE_CHECKING:
    from .capsules import Hosts

log = logging.getLogger(__name__)

ALL_TIERS = ("10m", "2h", "24h")
FLUSH_TIMEOUT = 10.0

# The tier that serves each range of GET /v1/capsules/{id}/metrics, and the window it shows.
RANGES: dict[str, tuple[str, dt.timedelta]] = {
    "5m": ("10m", dt.timedelta(minutes=5)),
    "10m": ("10m", dt.timedelta(minutes=10)),
    "1h": ("2h", dt.timedelta(hours=1)),
    "2h": ("2h", dt.timedelta(hours=2)),
    "6h": ("24h", dt.timedelta(hours=6)),
    "12h": ("24h", dt.timedelta(hours=12)),
    "24h": ("24h", dt.timedelta(hours=24)),
}


@dataclass(frozen=True, slots=True)
class MetricSample:
    ts: dt.datetime
    cpu_pct: float
    mem_bytes: int
    disk_bytes: int


def _from_wire(point: pb.MetricPoint) -> MetricSample:
    return MetricSample(
        ts=dt.datetime.fromtimestamp(point.timestamp_ms / 1000, dt.UTC),
        cpu_pct=round(point.cpu_pct, 2),
        mem_bytes=point.mem_bytes,
        disk_bytes=point.disk_bytes,
    )


def window(
    samples: Sequence[MetricSample], span: dt.timedelta, end: dt.datetime
) -> list[MetricSample]:
    """The samples of the `span` before `end`."""
    start = end - span
    return [s for s in samples if start <= s.ts <= end]


async def live(client: AgentClient, wire_id: str, range_: str) -> list[MetricSample]:
    """A running capsule's samples for `range_`, from its agent."""
    tier, span = RANGES[range_]
    with agent_errors():
        resp = await client.get_sandbox_metrics(pb.SandboxRef(sandbox_id=wire_id), timeout=10)
    samples = [_from_wire(p) for t in resp.tiers if t.name == tier for p in t.points]
    return window(samples, span, utcnow())


async def stored(db: Database, sandbox_id: uuid.UUID, range_: str) -> list[MetricSample]:
    """A paused capsule's copied samples: the `range_` before its last sample."""
    tier, span = RANGES[range_]
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(SandboxMetric)
            .where(SandboxMetric.sandbox_id == sandbox_id, SandboxMetric.tier == tier)
            .order_by(SandboxMetric.ts)
        )
        samples = [MetricSample(r.ts, r.cpu_pct, r.mem_bytes, r.disk_bytes) for r in rows]
    return window(samples, span, samples[-1].ts) if samples else []


async def flush(
    db: Database,
    client: AgentClient,
    sandbox_id: uuid.UUID,
    tiers: Sequence[str] = ALL_TIERS,
) -> None:
    """Copy the capsule's samples of `tiers` from its agent into the database (best effort)."""
    wire_id = ids.SANDBOX.format(sandbox_id)
    try:
        resp = await client.get_sandbox_metrics(
            pb.SandboxRef(sandbox_id=wire_id), timeout=FLUSH_TIMEOUT
        )
    except grpc.aio.AioRpcError as e:
        log.warning("metrics of %s not copied: %s", wire_id, e.code().name)
        return
    fresh = {t.name: t.points for t in resp.tiers if t.name in tiers and t.points}
    dropped = [name for name in ALL_TIERS if name not in tiers]
    rows = [
        SandboxMetric(
            sandbox_id=sandbox_id,
            tier=name,
            ts=sample.ts,
            cpu_pct=sample.cpu_pct,
            mem_bytes=sample.mem_bytes,
            disk_bytes=sample.disk_bytes,
        )
        for name, points in fresh.items()
        for sample in map(_from_wire, points)
    ]
    try:
        async with db.sessionmaker() as session, transaction(session, write=True):
            await session.execute(
                delete(SandboxMetric).where(
                    SandboxMetric.sandbox_id == sandbox_id,
                    SandboxMetric.tier.in_([*fresh, *dropped]),
                )
            )
            session.add_all(rows)
    except Exception:
        log.exception("metrics of %s not stored", wire_id)


async def capsule_metrics(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, range_: str
) -> list[MetricSample]:
    """Live samples of a running capsule, the stored copy of a paused (or missing) one; a
    stopped capsule has none to show (404)."""
    async with db.sessionmaker() as session:
        sandbox = await capsules.get_capsule(session, team_id, wire_id)
        if sandbox.status in ("stopped", "error"):
            raise NotFound("capsule not found")
        client = await hosts.client_for(session, sandbox) if sandbox.status == "running" else None
    if client is None:
        return await stored(db, sandbox.id, range_)
    return await live(client, wire_id, range_)
