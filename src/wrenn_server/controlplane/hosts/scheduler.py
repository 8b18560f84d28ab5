"""Placement of new capsules on hosts. Round robin over the online hosts a team may use;
other strategies implement `Scheduler`. A capsule from a template held by one host (a snapshot,
a built image) can only run there."""

from __future__ import annotations

import itertools
import uuid
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models.capsules import Template
from ..db.models.hosts import Host
from ..errors import ServiceUnavailable


class Scheduler(Protocol):
    async def pick(self, session: AsyncSession, team_id: uuid.UUID, template: Template) -> Host: ...


class RoundRobinScheduler:
    def __init__(self) -> None:
        self._counter = itertools.count()

    async def pick(self, session: AsyncSession, team_id: uuid.UUID, template: Template) -> Host:
        """Shared hosts, plus the team's own (BYOC) hosts, that are online; only the template's
        host if it has one."""
        query = (
            select(Host)
            .where(Host.status == "online", Host.address.is_not(None))
            .where(or_(Host.type == "regular", Host.team_id == team_id))
            .order_by(Host.created_at, Host.id)
        )
        if template.host_id is not None:
            query = query.where(Host.id == template.host_id)
        hosts = list(await session.scalars(query))
        if not hosts and template.host_id is not None:
            raise ServiceUnavailable(
                f"the host holding template {template.name!r} is not available"
            )
        if not hosts:
            raise ServiceUnavailable("no host is available to run capsules")
        return hosts[next(self._counter) % len(hosts)]
