"""Lifecycle events of a team's capsules and snapshots, kept for a while so a live stream can
resume from the last event its client saw (`Last-Event-ID`)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from ..types import Base, JSONType, UTCDateTime, utcnow

# SQLite assigns increasing ids only to an INTEGER PRIMARY KEY (the rowid).
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Event(Base):
    """One event; `id` increases with every insert and is the stream's event id."""

    __tablename__ = "events"
    __table_args__ = (Index(None, "team_id", "id"), Index(None, "created_at"))

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    # No foreign key: events of a deleted team are purged by age like the others.
    team_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(40))
    # The SSE message body as the SDK parses it (event, outcome, resource, actor, metadata, ...).
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
