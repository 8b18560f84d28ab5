"""Lifecycle events for the live stream: written from the audit records of capsule and snapshot
changes (in the same transaction, so an event exists exactly when its change committed), read
back in id order, purged by age.

The payload is the published SDK's `SSEEvent`: `event` (its kind, e.g. `capsule.create`),
`outcome`, `resource` {id, type}, `actor` {type, id, name}, `metadata` (strings only), `error`,
`sandbox` and `timestamp`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import Event

if TYPE_CHECKING:
    from ..db.models import AuditLog

# (audit resource type, action) -> (event kind, new capsule status or None).
_KINDS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("sandbox", "create"): ("capsule.create", "running"),
    ("sandbox", "pause"): ("capsule.pause", "paused"),
    ("sandbox", "auto_pause"): ("capsule.pause", "paused"),
    ("sandbox", "resume"): ("capsule.resume", "running"),
    ("sandbox", "destroy"): ("capsule.destroy", "stopped"),
    ("sandbox", "stopped"): ("capsule.destroy", "stopped"),
    ("sandbox", "marked_missing"): ("capsule.state.changed", "missing"),
    ("sandbox", "died"): ("capsule.state.changed", "error"),
    ("snapshot", "create"): ("template.snapshot.create", None),
    ("snapshot", "delete"): ("template.snapshot.delete", None),
}
_RESOURCE_TYPES = {"sandbox": "sandbox", "snapshot": "template"}


def payload_of(entry: AuditLog) -> dict[str, Any] | None:
    """The stream's message for an audit record, or None if the record is no lifecycle event."""
    found = _KINDS.get((entry.resource_type, entry.action))
    if found is None or entry.team_id is None:
        return None
    kind, status = found
    metadata = {k: str(v) for k, v in (entry.metadata_ or {}).items() if v is not None}
    if entry.action not in ("create", "delete") or entry.resource_type == "sandbox":
        metadata["action"] = entry.action
    if status is not None:
        metadata["to"] = status
    body: dict[str, Any] = {
        "event": kind,
        "resource": {"id": entry.resource_id, "type": _RESOURCE_TYPES[entry.resource_type]},
        "actor": {"type": entry.actor_type, "id": entry.actor_id, "name": entry.actor_name},
        "metadata": metadata,
        "sandbox": None,
        "timestamp": (entry.created_at or dt.datetime.now(dt.UTC)).isoformat(),
    }
    # The contract: state changes carry no outcome; actions succeeded (failures record nothing).
    if kind != "capsule.state.changed":
        body["outcome"] = "success"
    return body


async def record_from_audit(session: AsyncSession, entry: AuditLog) -> Event | None:
    """Add the event of an audit record to the caller's transaction (if it is one)."""
    payload = payload_of(entry)
    if payload is None or entry.team_id is None:
        return None
    event = Event(team_id=entry.team_id, kind=payload["event"], payload=payload)
    session.add(event)
    await session.flush()
    return event


async def latest_id(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.max(Event.id))) or 0)


async def after(
    session: AsyncSession,
    after_id: int,
    *,
    team_id: uuid.UUID | None = None,
    up_to: int | None = None,
    limit: int = 500,
) -> Sequence[Event]:
    """Events with an id above `after_id` (and at most `up_to`), oldest first."""
    query = select(Event).where(Event.id > after_id).order_by(Event.id).limit(limit)
    if team_id is not None:
        query = query.where(Event.team_id == team_id)
    if up_to is not None:
        query = query.where(Event.id <= up_to)
    return (await session.scalars(query)).all()


async def purge(session: AsyncSession, *, before: dt.datetime) -> int:
    """Forget events older than `before` (the stream's resume window)."""
    result = await session.execute(delete(Event).where(Event.created_at < before))
    return int(getattr(result, "rowcount", 0) or 0)
