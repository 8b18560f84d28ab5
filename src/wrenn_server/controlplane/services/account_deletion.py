"""Deleting one's own account (`DELETE /v1/me`).

Refused while the user owns a team that has other members (they would lose their team with
it: the owner removes them or deletes the team first). Otherwise the teams the user owns go
with the account: their capsules are destroyed through the capsule service (each one's host
frees it), then, in one transaction, the teams are marked deleted, every API key the user made
and every key of those teams is revoked, the user's memberships, OAuth identities and mailed
tokens are removed, every session ends, and the account is marked deleted.

The row stays (audit records and capsule history point at it), but its email is replaced by a
placeholder so the address is free for a new signup, and its password is dropped: nothing can
sign in to it again. The original email is kept in the audit record of the deletion.
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import (
    APIKey,
    NotificationChannel,
    OAuthIdentity,
    Sandbox,
    Team,
    TeamMember,
    User,
    UserToken,
)
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import BadRequest, Conflict, OwnsTeamWithMembers, Unauthorized
from . import api_keys, audit, capsules
from .capsules import Hosts
from .principals import Principal

_DEAD_CAPSULE_STATUSES = ("stopped", "error")
LAST_ADMIN = "the last platform admin cannot delete their account: make another user an admin first"


def deleted_email(user_id: uuid.UUID) -> str:
    """What a deleted account's email becomes: unique, never deliverable (`.invalid`)."""
    return f"deleted-{user_id.hex}@deleted.invalid"


async def _owned_teams(session: AsyncSession, user_id: uuid.UUID) -> list[Team]:
    rows = await session.scalars(
        select(Team)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(
            TeamMember.user_id == user_id,
            TeamMember.role == "owner",
            Team.deleted_at.is_(None),
            # Never the platform's own team, whoever is recorded in it.
            Team.id != ids.PLATFORM_TEAM_ID,
        )
        .order_by(Team.created_at, Team.id)
    )
    return list(rows)


async def _check_deletable(session: AsyncSession, user: User, owned: list[Team]) -> None:
    if owned:
        blocking = await session.scalar(
            select(func.count(func.distinct(TeamMember.team_id))).where(
                TeamMember.team_id.in_([team.id for team in owned]),
                TeamMember.user_id != user.id,
            )
        )
        if blocking:
            raise OwnsTeamWithMembers(
                f"you own {blocking} team(s) with other members: remove them or delete the "
                "team(s) before deleting your account"
            )
    if user.is_admin:
        others = await session.scalar(
            select(func.count())
            .select_from(User)
            .where(
                User.is_admin,
                User.is_active,
                User.deleted_at.is_(None),
                User.id != user.id,
            )
        )
        if not others:
            raise Conflict(LAST_ADMIN)


async def _load(session: AsyncSession, user_id: uuid.UUID, *, lock: bool = False) -> User:
    user = await session.get(User, user_id, with_for_update=lock)
    if user is None or user.deleted_at is not None or not user.is_active:
        raise Unauthorized("account not found or inactive")
    return user


async def delete_account(
    db: Database, hosts: Hosts, *, principal: Principal, confirmation: str
) -> None:
    """Delete the caller's account; `confirmation` must be its email (any case).

    Capsules are destroyed first, each with its host outside any transaction; a failure stops
    there, before anything else changes, so the user can retry."""
    user_id = principal.require_user()
    async with db.sessionmaker() as session, transaction(session):
        user = await _load(session, user_id)
        if confirmation.strip().casefold() != user.email.casefold():
            raise BadRequest("confirmation does not match your email address")
        owned = await _owned_teams(session, user_id)
        await _check_deletable(session, user, owned)
        live = (
            await session.execute(
                select(Sandbox.team_id, Sandbox.id).where(
                    Sandbox.team_id.in_([team.id for team in owned]),
                    Sandbox.status.not_in(_DEAD_CAPSULE_STATUSES),
                )
            )
        ).all()
    for team_id, sandbox_id in live:
        await capsules.destroy_capsule(
            db, hosts, team_id, ids.SANDBOX.format(sandbox_id), actor=principal.actor
        )
    async with db.sessionmaker() as session, transaction(session, write=True):
        user = await _load(session, user_id, lock=True)
        # Again under the lock: a member may have been added while capsules were destroyed.
        owned = await _owned_teams(session, user_id)
        await _check_deletable(session, user, owned)
        for team in owned:
            await _delete_team(session, principal, team)
        await _close_account(session, principal, user)


async def _delete_team(session: AsyncSession, principal: Principal, team: Team) -> None:
    """Mark an owned team deleted. A capsule created while the others were destroyed is
    recorded stopped here; the reconciler destroys it on its host."""
    now = utcnow()
    await _revoke_keys(session, principal, APIKey.team_id == team.id)
    await session.execute(delete(NotificationChannel).where(NotificationChannel.team_id == team.id))
    await session.execute(
        update(Sandbox)
        .where(Sandbox.team_id == team.id, Sandbox.status.not_in(_DEAD_CAPSULE_STATUSES))
        .values(status="stopped", last_updated=now)
    )
    team.deleted_at = now
    await session.flush()
    await audit.record(
        session,
        actor=principal.actor,
        team_id=team.id,
        resource_type="team",
        resource_id=ids.TEAM.format(team.id),
        action="delete",
        metadata={"name": team.name, "reason": "account_deleted"},
    )


async def _revoke_keys(
    session: AsyncSession, principal: Principal, condition: ColumnElement[bool]
) -> None:
    keys = (
        await session.scalars(select(APIKey).where(condition, APIKey.revoked_at.is_(None)))
    ).all()
    now = utcnow()
    for key in keys:
        key.revoked_at = now
        await api_keys.record(session, principal, key, "revoke", reason="account_deleted")
    await session.flush()


async def _close_account(session: AsyncSession, principal: Principal, user: User) -> None:
    email = user.email
    await _revoke_keys(session, principal, APIKey.created_by == user.id)
    memberships = (
        await session.scalars(select(TeamMember).where(TeamMember.user_id == user.id))
    ).all()
    for member in memberships:
        await session.delete(member)
        if member.role != "owner":
            await audit.record(
                session,
                actor=principal.actor,
                team_id=member.team_id,
                resource_type="member",
                resource_id=ids.USER.format(user.id),
                action="leave",
                metadata={"role": member.role, "email": email, "reason": "account_deleted"},
            )
    await session.execute(delete(OAuthIdentity).where(OAuthIdentity.user_id == user.id))
    await session.execute(delete(UserToken).where(UserToken.user_id == user.id))
    user.email = deleted_email(user.id)
    user.password_hash = None
    user.is_active = False
    user.deleted_at = utcnow()
    user.token_version += 1
    await session.flush()
    await audit.record(
        session,
        actor=principal.actor,
        team_id=None,
        resource_type="user",
        resource_id=ids.USER.format(user.id),
        action="delete",
        scope="admin",
        metadata={"email": email, "name": user.name},
    )
