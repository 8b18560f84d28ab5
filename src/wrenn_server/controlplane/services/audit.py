"""The audit log: recording events (fire-and-forget) and listing a team's events.

`record` writes in the caller's transaction, so an action and its record commit together, but
inside a SAVEPOINT: a failing audit write is logged and rolled back on its own, and never fails
the action it describes.

`list_events` pages newest first by (created_at, id) with an opaque cursor that encodes both:
events inserted while a client pages through are newer than its cursor, so they never shift the
pages it has still to read (no duplicates, no gaps).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import AuditLog
from ..db.types import utcnow
from ..errors import BadRequest
from . import events

log = logging.getLogger(__name__)

ActorType = Literal["user", "api_key", "system"]
Scope = Literal["team", "admin"]
Status = Literal["success", "info", "warning", "error"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: a user, an API key (its id and name), or the platform itself."""

    type: ActorType
    id: str | None
    name: str | None


SYSTEM = Actor(type="system", id=None, name="system")


async def record(
    session: AsyncSession,
    *,
    actor: Actor,
    team_id: uuid.UUID | None,
    resource_type: str,
    resource_id: str | None,
    action: str,
    scope: Scope = "team",
    status: Status = "success",
    metadata: dict[str, Any] | None = None,
    event_team_id: uuid.UUID | None = None,
) -> AuditLog | None:
    """Add one event to the caller's transaction; None (and a log line) if it could not be
    written. Never raises for a failed audit write; the caller's own pending changes are
    flushed first, outside the savepoint, so their errors still reach the caller.
    `event_team_id`: the team whose live stream gets the record of no team (a build)."""
    await session.flush()
    try:
        async with session.begin_nested():
            entry = AuditLog(
                team_id=team_id,
                actor_type=actor.type,
                actor_id=actor.id,
                actor_name=actor.name,
                resource_type=resource_type,
                resource_id=resource_id,
                action=action,
                scope=scope,
                status=status,
                metadata_=metadata or {},
                # Set here, not at the flush: the event's timestamp is read from it before.
                created_at=utcnow(),
            )
            session.add(entry)
            # Flushed with the event's row (or by the savepoint's release): one flush, not two.
            await events.record_from_audit(session, entry, team_id=event_team_id)
    except Exception:
        log.exception(
            "audit write failed (%s %s %s by %s %s); the action itself goes on",
            action,
            resource_type,
            resource_id,
            actor.type,
            actor.id,
        )
        return None
    return entry


# Listing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last event of a page: the next page starts strictly after it."""

    created_at: dt.datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps({"t": self.created_at.isoformat(), "i": self.id.hex})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data = json.loads(raw)
            created_at = dt.datetime.fromisoformat(data["t"])
            if created_at.tzinfo is None:
                raise ValueError("naive cursor time")
            return cls(created_at=created_at, id=uuid.UUID(hex=data["i"]))
        except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
            raise BadRequest("invalid cursor") from None


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[AuditLog]
    next_cursor: str | None


def split_values(values: Iterable[str] | None) -> list[str]:
    """Multi-value filter input: repeated parameters, each possibly comma-separated."""
    out: list[str] = []
    for value in values or ():
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return list(dict.fromkeys(out))


async def list_events(
    session: AsyncSession,
    *,
    team_id: uuid.UUID | None,
    include_admin_scope: bool,
    resource_types: Sequence[str] = (),
    actions: Sequence[str] = (),
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page:
    """One page of the team's events, newest first (`team_id` None: the platform-wide events,
    which belong to no team). Members see `scope=team` events only; `include_admin_scope` (team
    owners and admins) adds the team's admin-scope events."""
    limit = max(1, min(limit, MAX_LIMIT))
    query = select(AuditLog).where(
        AuditLog.team_id == team_id if team_id is not None else AuditLog.team_id.is_(None)
    )
    if not include_admin_scope:
        query = query.where(AuditLog.scope == "team")
    if resource_types:
        query = query.where(AuditLog.resource_type.in_(resource_types))
    if actions:
        query = query.where(AuditLog.action.in_(actions))
    if cursor:
        after = Cursor.decode(cursor)
        query = query.where(
            or_(
                AuditLog.created_at < after.created_at,
                and_(AuditLog.created_at == after.created_at, AuditLog.id < after.id),
            )
        )
    query = query.order_by(AuditLog.created_at.desc(), AuditLog.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(query))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = Cursor(created_at=last.created_at, id=last.id).encode()
    return Page(items=rows, next_cursor=next_cursor)
