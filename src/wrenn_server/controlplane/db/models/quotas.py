"""Per-team quota overrides; a team without a row (or a NULL column) has the platform default."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Integer, func
from sqlalchemy.orm import Mapped, mapped_column

from ..types import Base, UTCDateTime, utcnow


class TeamQuota(Base):
    __tablename__ = "team_quotas"

    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    # Live capsules (every state but stopped/error), paused ones included: they hold disk.
    max_capsules: Mapped[int | None] = mapped_column(Integer)
    # Sum over capsules that hold CPU and memory (pending, starting, running).
    max_vcpus: Mapped[int | None] = mapped_column(Integer)
    max_memory_mb: Mapped[int | None] = mapped_column(Integer)
    # Per capsule.
    max_disk_mb: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )
