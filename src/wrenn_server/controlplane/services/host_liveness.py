"""Host liveness, as the host monitor (jobs/reconciler.py) and the heartbeat route apply it.

A host is *seen* when its agent heartbeats or answers the reconciler. One not seen for
`down_after` is marked unreachable (audit `marked_down`) and its capsules missing; seen again, it
is online (audit `marked_up`) and the reconciler restores its capsules.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import Sandbox
from ..db.models.hosts import Host
from ..db.types import utcnow
from . import audit, capsule_status
from .hosts import record

log = logging.getLogger(__name__)

# How often a seen host's last_heartbeat_at is rewritten: liveness needs seconds, not every call.
SEEN_RESOLUTION = dt.timedelta(seconds=10)


async def mark_seen(session: AsyncSession, host: Host, *, now: dt.datetime | None = None) -> None:
    """The host's agent heartbeated or answered: it is alive."""
    now = now or utcnow()
    if host.status == "online" and host.last_heartbeat_at is not None:
        if now - host.last_heartbeat_at < SEEN_RESOLUTION:
            return
    host.last_heartbeat_at = now
    if host.status in ("unreachable", "offline"):
        down_since = host.updated_at
        host.status = "online"
        await record(
            session,
            host,
            actor=audit.SYSTEM,
            action="marked_up",
            status="info",
            metadata={"down_since": down_since.isoformat()},
        )
    await session.flush()


async def mark_stale_down(
    session: AsyncSession, *, down_after: dt.timedelta, now: dt.datetime | None = None
) -> list[Host]:
    """Online hosts not seen for `down_after` become unreachable; their capsules missing."""
    now = now or utcnow()
    stale = list(
        await session.scalars(
            select(Host).where(
                Host.status == "online",
                or_(Host.last_heartbeat_at.is_(None), Host.last_heartbeat_at < now - down_after),
            )
        )
    )
    for host in stale:
        host.status = "unreachable"
        missing = list(
            await session.scalars(
                select(Sandbox).where(
                    Sandbox.host_id == host.id,
                    Sandbox.status.in_(("starting", "running", "paused")),
                )
            )
        )
        for sandbox in missing:
            await capsule_status.set_status_by_system(session, sandbox, "missing", host.id)
        last_seen = host.last_heartbeat_at.isoformat() if host.last_heartbeat_at else None
        log.warning("host %s not seen since %s: marked unreachable", host.id, last_seen)
        await record(
            session,
            host,
            actor=audit.SYSTEM,
            action="marked_down",
            status="warning",
            metadata={"last_seen": last_seen, "capsules_missing": len(missing)},
        )
    await session.flush()
    return stale
