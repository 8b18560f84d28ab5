"""Teams: creation with an owner, and finding the team a login lands in."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import Team, TeamMember

TEAM_NAME_MAX = 100


async def create_team(
    session: AsyncSession, *, owner_id: uuid.UUID, name: str, is_default: bool = False
) -> Team:
    """A new team with `owner_id` as its owner (and, if asked, their default team)."""
    team = Team(id=ids.new_id(), name=name, slug=ids.new_team_slug())
    session.add(team)
    await session.flush()
    session.add(TeamMember(team_id=team.id, user_id=owner_id, role="owner", is_default=is_default))
    await session.flush()
    return team


async def login_team(session: AsyncSession, *, user_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """(team id, role) a login lands in: the default team, else the oldest membership.

    Soft-deleted teams never count. The fallback matters for invited users, whose memberships
    are not marked default.
    """
    row = (
        await session.execute(
            select(TeamMember.team_id, TeamMember.role)
            .join(Team, Team.id == TeamMember.team_id)
            .where(TeamMember.user_id == user_id, Team.deleted_at.is_(None))
            .order_by(TeamMember.is_default.desc(), TeamMember.created_at, TeamMember.team_id)
            .limit(1)
        )
    ).first()
    return (row[0], row[1]) if row else None
