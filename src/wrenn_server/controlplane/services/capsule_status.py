"""A capsule's status changes in the database: those of the platform's own operations (with the
audit event of who did what, in the transaction that records the outcome) and those the
platform makes on its own (reconciler, host monitor), audited as the system actor."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models.capsules import Sandbox
from ..db.models.hosts import Host
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import NotFound
from . import audit, capsule_metadata, capsule_routes
from .capsule_routes import CapsuleRoutes


@dataclass(frozen=True)
class StatusEvent:
    """The audit event of a status change: who did what."""

    actor: audit.Actor
    action: str
    metadata: dict[str, Any] | None = None


async def set_status(
    db: Database,
    sandbox_id: uuid.UUID,
    status: str,
    *,
    started: bool = False,
    host_ip: str | None = None,
    reported: Mapping[str, str] | None = None,
    event: StatusEvent | None = None,
    routes: CapsuleRoutes | None = None,
) -> Sandbox:
    """Record the capsule's new status (and the audit event of who changed it); with `routes`,
    a capsule now running is routed from there without another read once this commits."""
    read_at = capsule_routes.generation()  # before the rows are read
    async with db.sessionmaker() as session, transaction(session, write=True):
        sandbox, host = await _read(session, sandbox_id, with_host=routes is not None)
        now = utcnow()
        sandbox.status = status
        sandbox.last_updated = now
        if started:
            sandbox.started_at = sandbox.last_active_at = now
        if host_ip:
            sandbox.host_ip = host_ip
        if reported is not None:
            # The versions its host runs it with now (an agent updated between a pause and a
            # resume reports its new ones).
            sandbox.meta = capsule_metadata.with_platform(sandbox.meta or {}, reported)
        if event is not None:
            await audit.record(
                session,
                actor=event.actor,
                team_id=sandbox.team_id,
                resource_type="sandbox",
                resource_id=ids.SANDBOX.format(sandbox.id),
                action=event.action,
                metadata=event.metadata,
            )
        if routes is not None:
            routes.keep_at_commit(session, sandbox, host, read_at_generation=read_at)
        return sandbox


async def _read(
    session: AsyncSession, sandbox_id: uuid.UUID, *, with_host: bool
) -> tuple[Sandbox, Host | None]:
    """The capsule's row, and its host's in the same statement if asked."""
    if not with_host:
        sandbox = await session.get(Sandbox, sandbox_id)
        host = None
    else:
        query = select(Sandbox, Host).outerjoin(Host, Host.id == Sandbox.host_id)
        row = (await session.execute(query.where(Sandbox.id == sandbox_id))).first()
        sandbox, host = (None, None) if row is None else (row[0], row[1])
    if sandbox is None:
        raise NotFound("capsule not found")
    return sandbox, host


# (action, status) of the audit event of a change the platform makes on its own, by new status.
_SYSTEM_CHANGES: dict[str, tuple[str, audit.Status]] = {
    "paused": ("auto_pause", "info"),
    "stopped": ("stopped", "warning"),
    "missing": ("marked_missing", "warning"),
    "error": ("died", "error"),
}


async def set_status_by_system(
    session: AsyncSession,
    sandbox: Sandbox,
    status: str,
    host_id: uuid.UUID,
    *,
    reason: str | None = None,
    repair: Repair | None = None,
) -> None:
    """A status change the platform makes (reconciler, host monitor), audited as the system
    actor: running -> paused as `auto_pause`, -> stopped as `stopped`, -> missing as
    `marked_missing`, -> error (its sandbox died) as `died`. `reason` is kept as the capsule's
    status_reason and in the event; `repair` says what was found and what was done."""
    previous = sandbox.status
    sandbox.status = status
    sandbox.status_reason = reason
    sandbox.last_updated = utcnow()
    audited = _SYSTEM_CHANGES.get(status)
    # A capsule that was missing and comes back paused was not paused now; only a running one
    # that the agent paused on its own was auto-paused.
    if audited is None or (status == "paused" and previous == "missing"):
        return
    action, level = audited
    await audit.record(
        session,
        actor=audit.SYSTEM,
        team_id=sandbox.team_id,
        resource_type="sandbox",
        resource_id=ids.SANDBOX.format(sandbox.id),
        action=action,
        status=level,
        metadata={
            "from": previous,
            "host_id": ids.HOST.format(host_id),
            **({"reason": reason} if reason else {}),
            **(repair.as_metadata() if repair else {}),
        },
    )


@dataclass(frozen=True)
class Repair:
    """What the reconciler found about a capsule and what it did, for its audit event."""

    found: str
    done: str

    def as_metadata(self) -> dict[str, str]:
        return {"found": self.found, "done": self.done}


async def record_host_cleanup(
    session: AsyncSession,
    *,
    sandbox_id: uuid.UUID,
    team_id: uuid.UUID | None,
    host_id: uuid.UUID,
    was: str,
    repair: Repair,
) -> None:
    """A repair on a capsule's host that changes no row (the host still ran a capsule the
    database had ended, or one it has no record of): audited as the system actor, with what
    the capsule was (`was`: its row's status, or "no record")."""
    await audit.record(
        session,
        actor=audit.SYSTEM,
        team_id=team_id,
        resource_type="sandbox",
        resource_id=ids.SANDBOX.format(sandbox_id),
        action="host_cleanup",
        scope="team" if team_id else "admin",
        status="warning",
        metadata={"was": was, "host_id": ids.HOST.format(host_id), **repair.as_metadata()},
    )
