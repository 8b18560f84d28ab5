"""Recording audit events in the caller's transaction: an action and its record commit together."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import AuditLog

ActorType = Literal["user", "api_key", "system"]


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
    scope: Literal["team", "admin"] = "team",
    status: Literal["success", "info", "warning", "error"] = "success",
    metadata: dict[str, Any] | None = None,
) -> AuditLog:
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
    )
    session.add(entry)
    await session.flush()
    return entry
