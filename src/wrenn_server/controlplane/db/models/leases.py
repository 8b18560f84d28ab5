"""Leases: which control plane process runs the background work only one process may run."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ..types import Base, UTCDateTime


class Lease(Base):
    """Held by `holder` until `expires_at`; its holder renews it, anyone takes it once it lapsed."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
