"""Placement of new capsules on hosts: the online host a team may use with the smallest share of
its memory reserved by live capsules (counting the new one), so a bigger host takes more and a
new or emptied host fills first; round robin among equals. Other strategies implement
`Scheduler`. A capsule from a template held by one host (a snapshot, a built image) can only run
there.

A host is a candidate only if it can hold the capsule: no more vCPUs than it has CPUs, the memory
reserved by its live capsules plus the new one within its memory times the overcommit ratio, and
at least the capsule's disk free on its data dir (as the agent last reported it). What a host
never reported is not checked here; its agent checks again before it starts anything (and also
counts what the database cannot see, such as its warm pool), so a host full for a reason this
view misses still refuses rather than overfills."""

from __future__ import annotations

import itertools
import uuid
from typing import Protocol

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models.capsules import Sandbox, Template
from ..db.models.hosts import Host
from ..errors import HostUnavailable, InsufficientCapacity

# Capsules that hold (or are about to hold) their memory on a host.
LIVE = ("pending", "starting", "running")
# What a host that never said how much memory it has is taken to have (for weighing only).
UNKNOWN_MEMORY_MB = 4096


class Scheduler(Protocol):
    async def pick(
        self,
        session: AsyncSession,
        team_id: uuid.UUID,
        template: Template,
        memory_mb: int,
        *,
        vcpus: int = 1,
        disk_mb: int = 0,
    ) -> Host: ...

    async def check_room(
        self, session: AsyncSession, host: Host, *, vcpus: int, memory_mb: int
    ) -> None: ...


def _fits(capacity: int | None, need: int) -> bool:
    return capacity is None or need <= capacity


class BalancedScheduler:
    def __init__(self, overcommit: float = 1.0) -> None:
        self._counter = itertools.count()
        # Memory a host may promise to capsules, as a multiple of what it has.
        self.overcommit = overcommit

    def _capacity_mb(self, host: Host) -> int | None:
        return None if host.memory_mb is None else int(host.memory_mb * self.overcommit)

    async def pick(
        self,
        session: AsyncSession,
        team_id: uuid.UUID,
        template: Template,
        memory_mb: int,
        *,
        vcpus: int = 1,
        disk_mb: int = 0,
    ) -> Host:
        """Among the shared hosts and the team's own (BYOC) hosts that are online - only the
        template's host if it has one - the least loaded that can hold the capsule."""
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
        rows = [(host, int(mb)) for host, mb in await session.execute(query)]
        if not rows and template.host_id is not None:
            raise HostUnavailable(f"the host holding template {template.name!r} is not available")
        if not rows:
            raise InsufficientCapacity("no host is available to run capsules")
        # Each filter in turn; the first that leaves no host names what is missing.
        rows = [(h, mb) for h, mb in rows if h.cpu_cores is None or vcpus <= h.cpu_cores]
        if not rows:
            raise InsufficientCapacity(f"no available host has {vcpus} CPUs")
        # A host smaller than the capsule could never give it the memory it asks for.
        rows = [(h, mb) for h, mb in rows if _fits(self._capacity_mb(h), memory_mb)]
        if not rows:
            raise InsufficientCapacity(f"no available host has {memory_mb} MB of memory")
        rows = [(h, mb) for h, mb in rows if _fits(self._capacity_mb(h), mb + memory_mb)]
        if not rows:
            raise InsufficientCapacity(
                f"no available host has {memory_mb} MB of memory free: the hosts are full, "
                "retry when capsules have stopped"
            )
        rows = [(h, mb) for h, mb in rows if h.disk_free_mb is None or h.disk_free_mb >= disk_mb]
        if not rows:
            raise InsufficientCapacity(f"no available host has {disk_mb} MB of disk free")
        loads = [(mb + memory_mb) / (host.memory_mb or UNKNOWN_MEMORY_MB) for host, mb in rows]
        least = min(loads)
        best: list[Host] = [h for (h, _mb), load in zip(rows, loads, strict=True) if load == least]
        return best[next(self._counter) % len(best)]

    async def check_room(
        self, session: AsyncSession, host: Host, *, vcpus: int, memory_mb: int
    ) -> None:
        """Raise InsufficientCapacity unless `host` can take back a capsule of this size (a
        paused capsule resumes where its files are)."""
        if host.cpu_cores is not None and vcpus > host.cpu_cores:
            raise InsufficientCapacity(f"the capsule's host has fewer than {vcpus} CPUs")
        capacity = self._capacity_mb(host)
        if capacity is None:
            return
        # Other capsules only: the one resuming is paused, so not counted.
        reserved = await session.scalar(
            select(func.coalesce(func.sum(Sandbox.memory_mb), 0)).where(
                Sandbox.host_id == host.id, Sandbox.status.in_(LIVE)
            )
        )
        if not _fits(capacity, int(reserved or 0) + memory_mb):
            raise InsufficientCapacity(
                f"the capsule's host does not have {memory_mb} MB of memory free: retry when other "
                "capsules have stopped"
            )
