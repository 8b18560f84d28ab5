"""Schemas of `/v1/audit-logs`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from .. import ids
from ..db.models import AuditLog


class AuditActor(BaseModel):
    type: str = Field(description="user, api_key or system.")
    id: str | None = Field(description="usr-... or key-...; null for the system.")
    name: str | None


class AuditLogEntry(BaseModel):
    id: str
    team_id: str | None
    actor: AuditActor
    resource_type: str
    resource_id: str | None
    action: str
    scope: str = Field(description="team or admin.")
    status: str = Field(description="success, info, warning or error.")
    metadata: dict[str, Any]
    created_at: dt.datetime

    @classmethod
    def of(cls, row: AuditLog) -> AuditLogEntry:
        return cls(
            id=ids.AUDIT_LOG.format(row.id),
            team_id=ids.TEAM.format(row.team_id) if row.team_id else None,
            actor=AuditActor(type=row.actor_type, id=row.actor_id, name=row.actor_name),
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            action=row.action,
            scope=row.scope,
            status=row.status,
            metadata=row.metadata_ or {},
            created_at=row.created_at,
        )


class AuditLogPage(BaseModel):
    items: list[AuditLogEntry]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next (older) page; null on the last page."
    )
