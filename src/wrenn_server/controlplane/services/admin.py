"""Platform administration: every team, template, capsule and user of the installation.

Callers are platform admins (the route dependency re-reads `is_admin` from the database). The
platform team (`ids.PLATFORM_TEAM_ID`, owner of the base templates) is not a team anyone works
in, so it is neither listed nor toggled here. Template deletion lives in `snapshots`, the team list
and team deletion in `admin_teams`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, ScalarSelect, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import Sandbox, Team, TeamMember, Template, User, UserToken
from ..errors import BadRequest, NotFound
from . import accounts, audit


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


@dataclass(frozen=True, slots=True)
class UserRow:
    user: User
    teams_joined: int
    teams_owned: int
    awaiting_activation: bool  # signed up with email verification and never activated


async def list_users(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[UserRow], int]:
    """One page of the accounts that are not deleted, newest first (as the Go system orders
    them), with the live teams each is in and owns; and how many there are in all."""

    def memberships(*extra: ColumnElement[bool]) -> ScalarSelect[int]:
        return (
            select(func.count())
            .select_from(TeamMember)
            .join(Team, Team.id == TeamMember.team_id)
            .where(TeamMember.user_id == User.id, Team.deleted_at.is_(None), *extra)
            .correlate(User)
            .scalar_subquery()
        )

    # As `accounts.awaiting_activation`, for every row at once.
    activation_link = (
        exists()
        .where(
            UserToken.user_id == User.id,
            UserToken.purpose == accounts.ACTIVATION,
            UserToken.used_at.is_(None),
        )
        .correlate(User)
    )
    rows = await session.execute(
        select(User, memberships(), memberships(TeamMember.role == "owner"), activation_link)
        .where(User.deleted_at.is_(None))
        .order_by(User.created_at.desc(), User.id)
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(
        select(func.count()).select_from(User).where(User.deleted_at.is_(None))
    )
    return [
        UserRow(
            user=user,
            teams_joined=int(joined or 0),
            teams_owned=int(owned or 0),
            awaiting_activation=bool(linked)
            and not user.is_active
            and user.email_verified_at is None,
        )
        for user, joined, owned, linked in rows
    ], int(total or 0)


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
