"""Placement of new capsules on hosts. Round robin over the online hosts a team may use;
other strategies implement `Scheduler`."""

from __future__ import annotations

import itertools
import uuid
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models.hosts import Host
from ..errors import ServiceUnavailable


class Scheduler(Protocol):
    async def pick(self, session: AsyncSession, team_id: uuid.UUID) -> Host: ...


class RoundRobinScheduler:
    def __init__(self) -> None:
        self._counter = itertools.count()

    async def pick(self, session: AsyncSession, team_id: uuid.UUID) -> Host:
        """Shared hosts, plus the team's own (BYOC) hosts, that are online."""
        rows = await session.scalars(
            select(Host)
            .where(Host.status == "online", Host.address.is_not(None))
            .where(or_(Host.type == "regular", Host.team_id == team_id))
            .order_by(Host.created_at, Host.id)
        )
        hosts = list(rows)
        if not hosts:
            raise ServiceUnavailable("no host is available to run capsules")
        return hosts[next(self._counter) % len(hosts)]
