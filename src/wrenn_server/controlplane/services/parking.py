"""A team's parking policy: its idle capsules paused after a quiet period, and resumed by the
next request that reaches them.

The policy fills in what a capsule was created without: a create that leaves out `timeout_sec`
gets the team's `idle_sec` (the host agent's TTL reaper then pauses it after that long without
an exec, a ping or a stream), one that leaves out `auto_resume` gets the team's `auto_resume`
(REST exec, files, processes, streams, the E2B envd protocol and the port proxy then resume it
when paused). A value the creator sent is kept, `timeout_sec: 0` (never pause) included. It is
applied at create time, so the capsule shows what it got, and a change of policy applies to
capsules created after it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import Team

# The same bound as a capsule's own timeout_sec.
MAX_IDLE_SEC = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Parking:
    idle_sec: int = 0
    auto_resume: bool = False


OFF = Parking()


def of(team: Team) -> Parking:
    return Parking(idle_sec=team.park_after_sec, auto_resume=team.park_resume)


async def of_team(session: AsyncSession, team_id: uuid.UUID) -> Parking:
    row = (
        await session.execute(
            select(Team.park_after_sec, Team.park_resume).where(Team.id == team_id)
        )
    ).first()
    return OFF if row is None else Parking(idle_sec=row[0], auto_resume=row[1])


def applied(
    parking: Parking, timeout_sec: int | None, auto_resume: bool | None
) -> tuple[int, bool]:
    """A new capsule's idle timeout and auto_resume: its own where given, else the team's."""
    return (
        parking.idle_sec if timeout_sec is None else timeout_sec,
        parking.auto_resume if auto_resume is None else auto_resume,
    )
