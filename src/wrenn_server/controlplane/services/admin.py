"""Platform administration: every team, template, capsule and user of the installation.

Callers are platform admins (the route dependency re-reads `is_admin` from the database). The
platform team (`ids.PLATFORM_TEAM_ID`, owner of the base templates) is not a team anyone works
in, so it is neither listed nor toggled here. Template deletion lives in `snapshots`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import Sandbox, Team, TeamMember, Template, User
from ..errors import BadRequest, NotFound
from . import accounts, audit


@dataclass(frozen=True, slots=True)
class TeamSummary:
    team: Team
    member_count: int


async def list_teams(session: AsyncSession) -> list[TeamSummary]:
    """All live teams (oldest first) with their member counts."""
    members = (
        select(TeamMember.team_id, func.count().label("n")).group_by(TeamMember.team_id).subquery()
    )
    rows = await session.execute(
        select(Team, func.coalesce(members.c.n, 0))
        .outerjoin(members, members.c.team_id == Team.id)
        .where(Team.deleted_at.is_(None), Team.id != ids.PLATFORM_TEAM_ID)
        .order_by(Team.created_at, Team.id)
    )
    return [TeamSummary(team=team, member_count=int(n)) for team, n in rows]


async def set_byoc(
    session: AsyncSession, *, actor: audit.Actor, team_id: uuid.UUID, enabled: bool
) -> Team:
    """Allow (or stop allowing) the team to bring its own hosts; audited with scope `admin`."""
    team = await session.get(Team, team_id, with_for_update=True)
    if team is None or team.deleted_at is not None or team.id == ids.PLATFORM_TEAM_ID:
        raise NotFound("team not found")
    previous = team.is_byoc
    team.is_byoc = enabled
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        team_id=team_id,
        resource_type="team",
        resource_id=ids.TEAM.format(team_id),
        action="set_byoc",
        scope="admin",
        metadata={"enabled": enabled, "previous": previous},
    )
    return team


async def list_templates(session: AsyncSession, team_id: uuid.UUID | None) -> list[Template]:
    """Every team's templates and the platform's (or only `team_id`'s), oldest first."""
    query = select(Template)
    if team_id is not None:
        query = query.where(Template.team_id == team_id)
    return list(await session.scalars(query.order_by(Template.created_at, Template.name)))


async def list_capsules(session: AsyncSession, team_id: uuid.UUID | None) -> list[Sandbox]:
    """Capsules of every team (or only `team_id`'s), newest first."""
    query = select(Sandbox)
    if team_id is not None:
        query = query.where(Sandbox.team_id == team_id)
    return list(await session.scalars(query.order_by(Sandbox.created_at.desc(), Sandbox.id)))


async def list_users(session: AsyncSession) -> list[User]:
    """Every account that is not deleted, oldest first."""
    query = select(User).where(User.deleted_at.is_(None)).order_by(User.created_at, User.email)
    return list(await session.scalars(query))


async def create_user(
    session: AsyncSession,
    *,
    actor: audit.Actor,
    email: str,
    name: str,
    password: str,
    is_admin: bool,
) -> User:
    """An active account with its default team, its email counted as verified (the admin
    vouches for it); `Conflict` if the email is taken. Audited with scope `admin`."""
    user, _team = await accounts.create_account(
        session, email=email, password=password, name=name, is_admin=is_admin, verified=True
    )
    await audit.record(
        session,
        actor=actor,
        team_id=None,
        resource_type="user",
        resource_id=ids.USER.format(user.id),
        action="create",
        scope="admin",
        metadata={"email": email, "is_admin": is_admin},
    )
    return user


async def set_user_active(
    session: AsyncSession,
    *,
    actor: audit.Actor,
    actor_user_id: uuid.UUID,
    user_id: uuid.UUID,
    active: bool,
) -> User:
    """Deactivate or reactivate an account. A deactivated user cannot sign in, and their JWTs
    (revoked for good: reactivation does not bring them back) and API keys stop working.
    Admins cannot deactivate themselves (someone must be left to undo it)."""
    user = await session.get(User, user_id, with_for_update=True)
    if user is None or user.deleted_at is not None:
        raise NotFound("user not found")
    if user.id == actor_user_id and not active:
        raise BadRequest("you cannot deactivate your own account")
    previous = user.is_active
    if previous != active:
        user.is_active = active
        if not active:
            user.token_version += 1
        await session.flush()
    await audit.record(
        session,
        actor=actor,
        team_id=None,
        resource_type="user",
        resource_id=ids.USER.format(user.id),
        action="activate" if active else "deactivate",
        scope="admin",
        metadata={"email": user.email, "previous": previous},
    )
    return user
