"""Per-team quotas: how many capsules a team may have, the vCPUs and memory they may reserve
together, and the largest disk one of them may have.

What counts:
- capsules: every capsule that is not stopped or in error. Paused ones count: they keep their
  disk and checkpoint on the host, and resuming one needs no new slot.
- vCPUs and memory: capsules that hold them (pending, starting, running). A paused capsule
  holds neither, so resuming one takes them back and is checked like a create.
- disk: per capsule, at create.

Limits are the platform defaults (settings) unless an admin gave the team its own (a
`team_quotas` row; a NULL column keeps that limit's default). The platform team (template
builds) has none.

A check and the write it allows happen in one transaction that first locks the team's row
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serialises writers),
so two concurrent creates cannot both take the last slot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import Sandbox, Team, TeamQuota
from ..db.types import utcnow
from ..errors import NotFound, QuotaExceeded
from ..settings import Settings
from . import audit

# Capsules that occupy one of the team's capsule slots: all but these.
ENDED = ("stopped", "error")
# Capsules that hold their vCPUs and memory.
HOLDING = ("pending", "starting", "running")
FIELDS = ("max_capsules", "max_vcpus", "max_memory_mb", "max_disk_mb")


@dataclass(frozen=True, slots=True)
class Limits:
    max_capsules: int
    max_vcpus: int
    max_memory_mb: int
    max_disk_mb: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The platform defaults."""
        return cls(
            max_capsules=settings.quota_max_capsules,
            max_vcpus=settings.quota_max_vcpus,
            max_memory_mb=settings.quota_max_memory_mb,
            max_disk_mb=settings.quota_max_disk_mb,
        )


# The settings' defaults, for callers that were given no Settings.
DEFAULT_LIMITS = Limits.of(Settings.model_construct())


@dataclass(frozen=True, slots=True)
class Overrides:
    """A team's own limits; None keeps the platform default."""

    max_capsules: int | None = None
    max_vcpus: int | None = None
    max_memory_mb: int | None = None
    max_disk_mb: int | None = None

    def over(self, defaults: Limits) -> Limits:
        def pick(mine: int | None, default: int) -> int:
            return default if mine is None else mine

        return Limits(
            max_capsules=pick(self.max_capsules, defaults.max_capsules),
            max_vcpus=pick(self.max_vcpus, defaults.max_vcpus),
            max_memory_mb=pick(self.max_memory_mb, defaults.max_memory_mb),
            max_disk_mb=pick(self.max_disk_mb, defaults.max_disk_mb),
        )


@dataclass(frozen=True, slots=True)
class Usage:
    capsules: int = 0
    vcpus: int = 0
    memory_mb: int = 0


@dataclass(frozen=True, slots=True)
class TeamQuotas:
    limits: Limits
    overrides: Overrides
    usage: Usage


async def overrides_of(session: AsyncSession, team_id: uuid.UUID) -> Overrides:
    return _overrides(await session.get(TeamQuota, team_id))


def _overrides(row: TeamQuota | None) -> Overrides:
    if row is None:
        return Overrides()
    return Overrides(**{name: getattr(row, name) for name in FIELDS})


async def usage_of(session: AsyncSession, team_id: uuid.UUID) -> Usage:
    return (await usage_by_team(session, [team_id])).get(team_id, Usage())


async def usage_by_team(
    session: AsyncSession, team_ids: Iterable[uuid.UUID] | None = None
) -> dict[uuid.UUID, Usage]:
    """What each team's capsules hold now (every team with capsules when `team_ids` is None)."""
    holding = Sandbox.status.in_(HOLDING)
    query = (
        select(
            Sandbox.team_id,
            func.count(),
            func.coalesce(func.sum(case((holding, Sandbox.vcpus), else_=0)), 0),
            func.coalesce(func.sum(case((holding, Sandbox.memory_mb), else_=0)), 0),
        )
        .where(Sandbox.status.not_in(ENDED))
        .group_by(Sandbox.team_id)
    )
    if team_ids is not None:
        query = query.where(Sandbox.team_id.in_(list(team_ids)))
    return {
        team: Usage(capsules=int(n), vcpus=int(cpus), memory_mb=int(mb))
        for team, n, cpus, mb in await session.execute(query)
    }


async def team_quotas(session: AsyncSession, team_id: uuid.UUID, defaults: Limits) -> TeamQuotas:
    overrides = await overrides_of(session, team_id)
    return TeamQuotas(overrides.over(defaults), overrides, await usage_of(session, team_id))


async def all_team_quotas(session: AsyncSession, defaults: Limits) -> dict[uuid.UUID, TeamQuotas]:
    """Every team's quotas that has overrides or capsules; the others have the defaults and no
    usage."""
    usage = await usage_by_team(session)
    overrides = {
        row.team_id: Overrides(**{name: getattr(row, name) for name in FIELDS})
        for row in await session.scalars(select(TeamQuota))
    }
    return {
        team: TeamQuotas(
            overrides.get(team, Overrides()).over(defaults),
            overrides.get(team, Overrides()),
            usage.get(team, Usage()),
        )
        for team in set(usage) | set(overrides)
    }


async def _lock_team(session: AsyncSession, team_id: uuid.UUID) -> tuple[Team | None, Overrides]:
    """Serialise quota checks of one team until the transaction ends (a no-op clause on
    SQLite, whose write transactions are serialised by BEGIN IMMEDIATE); the team's row as
    locked and its own limits, read in the same round trip."""
    row = (
        await session.execute(
            select(Team, TeamQuota)
            .outerjoin(TeamQuota, TeamQuota.team_id == Team.id)
            .where(Team.id == team_id)
            .with_for_update(of=Team)
            .execution_options(populate_existing=True)
        )
    ).first()
    if row is None:
        return None, Overrides()
    return row[0], _overrides(row[1])


async def check(
    session: AsyncSession,
    team_id: uuid.UUID,
    defaults: Limits,
    *,
    vcpus: int,
    memory_mb: int,
    disk_mb: int | None = None,
    new_capsule: bool = True,
) -> Team | None:
    """Raise QuotaExceeded unless the team can take a capsule of this size on top of what it
    holds: a new one (`new_capsule`, with its disk) or a paused one resuming. Locks the team's
    row for the rest of the caller's transaction, in which the caller records the capsule, and
    returns it as locked (what a create reads of the team next, its parking policy, then costs
    no statement); None for the platform team, which has no quotas and is not locked."""
    if team_id == ids.PLATFORM_TEAM_ID:
        return None
    team, overrides = await _lock_team(session, team_id)
    limits = overrides.over(defaults)
    # Read after the lock is granted (a statement of its own: one that waited for the lock
    # would still see the rows of its start, not the capsule the lock holder added).
    used = await usage_of(session, team_id)
    if disk_mb is not None and disk_mb > limits.max_disk_mb:
        raise _exceeded(
            f"a capsule's disk may be at most {limits.max_disk_mb} MB on this team "
            f"(asked for {disk_mb} MB)",
            "max_disk_mb",
            limits.max_disk_mb,
            0,
            disk_mb,
        )
    if new_capsule and used.capsules + 1 > limits.max_capsules:
        raise _exceeded(
            f"the team may have at most {limits.max_capsules} capsules that are not stopped "
            f"and has {used.capsules}",
            "max_capsules",
            limits.max_capsules,
            used.capsules,
            1,
        )
    if used.vcpus + vcpus > limits.max_vcpus:
        raise _exceeded(
            f"the team's running capsules may reserve at most {limits.max_vcpus} vCPUs: "
            f"{used.vcpus} reserved, {vcpus} more asked",
            "max_vcpus",
            limits.max_vcpus,
            used.vcpus,
            vcpus,
        )
    if used.memory_mb + memory_mb > limits.max_memory_mb:
        raise _exceeded(
            f"the team's running capsules may reserve at most {limits.max_memory_mb} MB of "
            f"memory: {used.memory_mb} MB reserved, {memory_mb} MB more asked",
            "max_memory_mb",
            limits.max_memory_mb,
            used.memory_mb,
            memory_mb,
        )
    return team


def _exceeded(message: str, quota: str, limit: int, used: int, requested: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"quota exceeded: {message}", quota=quota, limit=limit, used=used, requested=requested
    )


async def _live_team(session: AsyncSession, team_id: uuid.UUID, *, lock: bool = False) -> Team:
    team = await session.get(Team, team_id, with_for_update=lock)
    if team is None or team.deleted_at is not None or team.id == ids.PLATFORM_TEAM_ID:
        raise NotFound("team not found")
    return team


async def admin_team_quotas(
    session: AsyncSession, team_id: uuid.UUID, defaults: Limits
) -> TeamQuotas:
    """Any live team's quotas (platform admins)."""
    await _live_team(session, team_id)
    return await team_quotas(session, team_id, defaults)


async def set_overrides(
    session: AsyncSession,
    *,
    actor: audit.Actor,
    team_id: uuid.UUID,
    overrides: Overrides,
    defaults: Limits,
) -> TeamQuotas:
    """Replace the team's own limits (None: the platform default); audited with scope admin.
    Capsules already over a lowered limit keep running; the team cannot add more."""
    await _live_team(session, team_id, lock=True)
    previous = await overrides_of(session, team_id)
    row = await session.get(TeamQuota, team_id)
    if row is None:
        row = TeamQuota(team_id=team_id)
        session.add(row)
    for name, value in asdict(overrides).items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        team_id=team_id,
        resource_type="team",
        resource_id=ids.TEAM.format(team_id),
        action="set_quotas",
        scope="admin",
        metadata={"quotas": asdict(overrides), "previous": asdict(previous)},
    )
    return await team_quotas(session, team_id, defaults)
