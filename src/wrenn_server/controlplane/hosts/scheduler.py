"""Placement of new capsules on hosts: the online host a team may use with the smallest share of
its memory reserved by live capsules (counting the new one), so a bigger host takes more and a
new or emptied host fills first; round robin among equals. Other strategies implement
`Scheduler`. A capsule from a template held by one host (a snapshot, a built image) can only run
there."""

from __future__ import annotations

import itertools
import uuid
from typing import Protocol

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models.capsules import Sandbox, Template
from ..db.models.hosts import Host
from ..errors import ServiceUnavailable

# Capsules that hold (or are about to hold) their memory on a host.
LIVE = ("pending", "starting", "running")
# What a host that never said how much memory it has is taken to have.
UNKNOWN_MEMORY_MB = 4096


class Scheduler(Protocol):
    async def pick(
        self, session: AsyncSession, team_id: uuid.UUID, template: Template, memory_mb: int
    ) -> Host: ...


class BalancedScheduler:
    def __init__(self) -> None:
        self._counter = itertools.count()

    async def pick(
        self, session: AsyncSession, team_id: uuid.UUID, template: Template, memory_mb: int
    ) -> Host:
        """Among the shared hosts and the team's own (BYOC) hosts that are online - only the
        template's host if it has one - the least loaded."""
        reserved = (
            select(Sandbox.host_id, func.sum(Sandbox.memory_mb).label("mb"))
            .where(Sandbox.status.in_(LIVE))
            .group_by(Sandbox.host_id)
            .subquery()
        )
        query = (
            select(Host, func.coalesce(reserved.c.mb, 0))
            .outerjoin(reserved, reserved.c.host_id == Host.id)
            .where(Host.status == "online", Host.address.is_not(None))
            .where(or_(Host.type == "regular", Host.team_id == team_id))
            .order_by(Host.created_at, Host.id)
        )
        if template.host_id is not None:
            query = query.where(Host.id == template.host_id)
        rows = [(host, mb) for host, mb in await session.execute(query)]
        if not rows and template.host_id is not None:
            raise ServiceUnavailable(
                f"the host holding template {template.name!r} is not available"
            )
        if not rows:
            raise ServiceUnavailable("no host is available to run capsules")
        # A host smaller than the capsule could never give it the memory it asks for.
        rows = [(h, mb) for h, mb in rows if h.memory_mb is None or h.memory_mb >= memory_mb]
        if not rows:
            raise ServiceUnavailable(f"no available host has {memory_mb} MB of memory")
        loads = [(int(mb) + memory_mb) / (host.memory_mb or UNKNOWN_MEMORY_MB) for host, mb in rows]
        least = min(loads)
        best: list[Host] = [h for (h, _mb), load in zip(rows, loads, strict=True) if load == least]
        return best[next(self._counter) % len(best)]
