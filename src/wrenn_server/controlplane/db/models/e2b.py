"""What the E2B control API keeps about a capsule it created: E2B's lifecycle, which is not
Wrenn's (an absolute end, then killed or, with auto-pause, paused), and the envVars."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, ForeignKey, Index, Text, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from ..types import Base, JSONType, UTCDateTime, json_default_dict


class E2bSandbox(Base):
    __tablename__ = "e2b_sandboxes"
    __table_args__ = (Index(None, "end_at"),)

    sandbox_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("sandboxes.id", ondelete="CASCADE"), primary_key=True
    )
    # When the capsule's time is up (E2B's `endAt`); a paused capsule keeps its last one, and a
    # connect or resume sets a new one.
    end_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # At the end: paused (true) or killed (false, E2B's default).
    auto_pause: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    # The create's envVars: the capsule's default environment, given again on a resume.
    env: Mapped[dict[str, str]] = mapped_column(JSONType, default=json_default_dict)


class E2bSnapshot(Base):
    """Which capsule an E2B snapshot (a snapshot template of the team) was taken from, for
    E2B's `GET /snapshots?sandboxID=`. Keyed by the template's name in its team: a template
    deleted or replaced by other means leaves a row that names nothing, which lists skip."""

    __tablename__ = "e2b_snapshots"

    team_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    sandbox_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
