"""The append-only audit log of user and system actions."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from ..types import Base, JSONType, UTCDateTime, enum_check, json_default_dict, utcnow

ACTOR_TYPES = ("user", "api_key", "system")
SCOPES = ("team", "admin")
STATUSES = ("success", "info", "warning", "error")


class AuditLog(Base):
    """One event. Actor and resource ids are TEXT: they point at different tables (users, API
    keys, the system; capsules, hosts, templates by name) and must outlive what they name."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        CheckConstraint(enum_check("actor_type", ACTOR_TYPES), name="actor_type"),
        CheckConstraint(enum_check("scope", SCOPES), name="scope"),
        CheckConstraint(enum_check("status", STATUSES), name="status"),
        # Cursor pagination walks (team_id, created_at desc, id desc).
        Index(None, "team_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Null for platform-wide (admin scope) events. No foreign key: the log outlives teams.
    team_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(Text)
    actor_name: Mapped[str | None] = mapped_column(Text)
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(8))
    # "metadata" is reserved on declarative classes, hence the attribute name.
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONType, default=json_default_dict
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
