"""Teams: creation with an owner, the team a login lands in, and team and member management."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import APIKey, Sandbox, Team, TeamMember, User
from ..db.session import Database, transaction
from ..errors import BadRequest, Forbidden, NotFound
from . import api_keys, audit, capsules, parking
from .capsules import Hosts
from .principals import Principal

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


# --- Team management -------------------------------------------------------------------------
#
# Every decision reads the caller's role in the path's team from the database (the JWT's role is
# only a hint). A team the caller is not a member of, a soft-deleted team and a missing team all
# answer 404 alike: their existence is not ours to tell. A member acting on a team other than the
# token's one gets 403 (the contract: the id must match the JWT's team); switch teams first.
#
# Roles: exactly one owner per team, its creator. The owner cannot be removed, cannot leave and
# cannot have their role changed; "owner" is not an assignable role (the contract's enum is
# admin/member), so ownership is never transferred: an owner who is done deletes the team.
# Admins manage members; only the owner may remove an admin or change an admin's role.

ADMIN_ROLES = ("owner", "admin")


@dataclass(frozen=True, slots=True)
class MemberView:
    user: User
    role: str
    joined_at: dt.datetime


@dataclass(frozen=True, slots=True)
class TeamView:
    team: Team
    role: str


async def list_my_teams(session: AsyncSession, *, principal: Principal) -> list[TeamView]:
    user_id = principal.require_user()
    rows = await session.execute(
        select(Team, TeamMember.role)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(TeamMember.user_id == user_id, Team.deleted_at.is_(None))
        .order_by(Team.created_at, Team.id)
    )
    return [TeamView(team=team, role=role) for team, role in rows]


async def create_owned_team(session: AsyncSession, *, principal: Principal, name: str) -> Team:
    return await create_team(session, owner_id=principal.require_user(), name=name)


async def acting_role(
    session: AsyncSession, principal: Principal, team_id: uuid.UUID, *, lock: bool = False
) -> tuple[Team, str]:
    """The live team and the caller's role in it (404 if not a member, 403 if not the token's)."""
    user_id = principal.require_user()
    stmt = (
        select(Team, TeamMember.role)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(Team.id == team_id, TeamMember.user_id == user_id, Team.deleted_at.is_(None))
    )
    if lock:
        stmt = stmt.with_for_update(of=Team)
    row = (await session.execute(stmt)).first()
    if row is None:
        raise NotFound("team not found")
    if principal.team_id != team_id:
        raise Forbidden("this team is not your active team: switch to it first")
    return row[0], row[1]


def _require_admin(role: str) -> None:
    if role not in ADMIN_ROLES:
        raise Forbidden("this needs the team's owner or an admin")


async def list_members(session: AsyncSession, team_id: uuid.UUID) -> list[MemberView]:
    rows = await session.execute(
        select(User, TeamMember.role, TeamMember.created_at)
        .join(TeamMember, TeamMember.user_id == User.id)
        .where(TeamMember.team_id == team_id)
        .order_by(TeamMember.created_at, User.email)
    )
    return [MemberView(user=u, role=r, joined_at=j) for u, r, j in rows]


async def team_detail(
    session: AsyncSession, *, principal: Principal, team_id: uuid.UUID
) -> tuple[Team, list[MemberView]]:
    team, _role = await acting_role(session, principal, team_id)
    return team, await list_members(session, team_id)


async def team_members(
    session: AsyncSession, *, principal: Principal, team_id: uuid.UUID
) -> list[MemberView]:
    await acting_role(session, principal, team_id)
    return await list_members(session, team_id)


async def rename_team(
    session: AsyncSession, *, principal: Principal, team_id: uuid.UUID, name: str
) -> None:
    team, role = await acting_role(session, principal, team_id, lock=True)
    _require_admin(role)
    old = team.name
    team.name = name
    await session.flush()
    await audit.record(
        session,
        actor=principal.actor,
        team_id=team_id,
        resource_type="team",
        resource_id=ids.TEAM.format(team_id),
        action="rename",
        metadata={"old_name": old, "new_name": name},
    )


async def team_parking(
    session: AsyncSession, *, principal: Principal, team_id: uuid.UUID
) -> parking.Parking:
    """The team's parking policy (any member may read it)."""
    team, _role = await acting_role(session, principal, team_id)
    return parking.of(team)


async def set_team_parking(
    session: AsyncSession, *, principal: Principal, team_id: uuid.UUID, policy: parking.Parking
) -> parking.Parking:
    """Set the team's parking policy (owner or admin), audited with what changed."""
    team, role = await acting_role(session, principal, team_id, lock=True)
    _require_admin(role)
    old = parking.of(team)
    if policy != old:
        team.park_after_sec, team.park_resume = policy.idle_sec, policy.auto_resume
        await session.flush()
        await audit.record(
            session,
            actor=principal.actor,
            team_id=team_id,
            resource_type="team",
            resource_id=ids.TEAM.format(team_id),
            action="update_parking",
            metadata={
                "old": {"idle_sec": old.idle_sec, "auto_resume": old.auto_resume},
                "new": {"idle_sec": policy.idle_sec, "auto_resume": policy.auto_resume},
            },
        )
    return policy


async def live_capsule_ids(
    session: AsyncSession, *, principal: Principal, team_id: uuid.UUID
) -> list[str]:
    """Check that the caller may delete the team; the wire ids of its capsules to destroy."""
    _team, role = await acting_role(session, principal, team_id)
    if role != "owner":
        raise Forbidden("only the team's owner may delete it")
    rows = await session.scalars(
        select(Sandbox.id).where(
            Sandbox.team_id == team_id, Sandbox.status.not_in(_DEAD_CAPSULE_STATUSES)
        )
    )
    return [ids.SANDBOX.format(sandbox_id) for sandbox_id in rows]


_DEAD_CAPSULE_STATUSES = ("stopped", "error")


async def soft_delete_team(
    session: AsyncSession, *, principal: Principal, team_id: uuid.UUID
) -> None:
    """Mark the team deleted (its row, and so its slug, stays). Capsules are destroyed first by
    the caller; one created in between is stopped here, so nothing of a deleted team runs on."""
    team, role = await acting_role(session, principal, team_id, lock=True)
    if role != "owner":
        raise Forbidden("only the team's owner may delete it")
    now = dt.datetime.now(dt.UTC)
    team.deleted_at = now
    await session.execute(
        update(Sandbox)
        .where(Sandbox.team_id == team_id, Sandbox.status.not_in(_DEAD_CAPSULE_STATUSES))
        .values(status="stopped")
    )
    await session.flush()


async def delete_team(
    db: Database, hosts: Hosts, *, principal: Principal, team_id: uuid.UUID
) -> None:
    """Destroy the team's capsules, then soft-delete it (owner only).

    Each destroy talks to its host outside any transaction; a failure stops here, before the
    team is marked deleted, so the owner can retry."""
    async with db.sessionmaker() as session, transaction(session):
        live = await live_capsule_ids(session, principal=principal, team_id=team_id)
    for wire_id in live:
        await capsules.destroy_capsule(db, hosts, team_id, wire_id, actor=principal.actor)
    async with db.sessionmaker() as session, transaction(session, write=True):
        await soft_delete_team(session, principal=principal, team_id=team_id)


async def _member(session: AsyncSession, team_id: uuid.UUID, user_id: uuid.UUID) -> TeamMember:
    member = await session.get(TeamMember, (team_id, user_id))
    if member is None:
        raise NotFound("user is not a member of this team")
    return member


# One answer for every email that cannot be added (none, deactivated, deleted): a team admin
# learns nothing about other people's accounts from a refusal.
CANNOT_ADD = "cannot add this email: it must belong to an active account"


async def add_member(
    session: AsyncSession, *, principal: Principal, team_id: uuid.UUID, email: str
) -> MemberView:
    _team, role = await acting_role(session, principal, team_id, lock=True)
    _require_admin(role)
    user = await session.scalar(
        select(User).where(User.email == email, User.deleted_at.is_(None), User.is_active)
    )
    if user is None:
        raise NotFound(CANNOT_ADD)
    if await session.get(TeamMember, (team_id, user.id)) is not None:
        raise BadRequest("user is already a member of this team")
    member = TeamMember(team_id=team_id, user_id=user.id, role="member", is_default=False)
    session.add(member)
    await session.flush()
    await _record_member(session, principal, team_id, user, "add", {"role": "member"})
    return MemberView(user=user, role=member.role, joined_at=member.created_at)


def _check_manage(caller_role: str, target: TeamMember) -> None:
    _require_admin(caller_role)
    if target.role == "owner":
        raise Forbidden("the team's owner cannot be removed or have their role changed")
    if target.role == "admin" and caller_role != "owner":
        raise Forbidden("only the team's owner may manage an admin")


async def remove_member(
    session: AsyncSession, *, principal: Principal, team_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    _team, role = await acting_role(session, principal, team_id, lock=True)
    _require_admin(role)
    target = await _member(session, team_id, user_id)
    _check_manage(role, target)
    user = await session.get(User, user_id)
    await session.delete(target)
    await session.flush()
    await _record_member(session, principal, team_id, user, "remove", {"role": target.role})
    await _revoke_member_keys(session, principal, team_id, user_id, "member_removed")


async def update_member_role(
    session: AsyncSession,
    *,
    principal: Principal,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    new_role: str,
) -> None:
    _team, role = await acting_role(session, principal, team_id, lock=True)
    _require_admin(role)
    target = await _member(session, team_id, user_id)
    _check_manage(role, target)
    old_role = target.role
    target.role = new_role
    await session.flush()
    user = await session.get(User, user_id)
    await _record_member(
        session, principal, team_id, user, "role_update", {"old_role": old_role, "role": new_role}
    )


async def leave_team(session: AsyncSession, *, principal: Principal, team_id: uuid.UUID) -> None:
    _team, role = await acting_role(session, principal, team_id, lock=True)
    if role == "owner":
        raise Forbidden("the owner cannot leave the team: delete it instead")
    user_id = principal.require_user()
    target = await _member(session, team_id, user_id)
    user = await session.get(User, user_id)
    await session.delete(target)
    await session.flush()
    await _record_member(session, principal, team_id, user, "leave", {"role": role})
    await _revoke_member_keys(session, principal, team_id, user_id, "member_left")


async def _revoke_member_keys(
    session: AsyncSession,
    principal: Principal,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    reason: str,
) -> None:
    """Revoke the team's API keys that `user_id` made: someone who left a team keeps no way to
    act for it. (`principals` refuses such keys anyway; revoking them also shows it.)"""
    keys = (
        await session.scalars(
            select(APIKey).where(
                APIKey.team_id == team_id,
                APIKey.created_by == user_id,
                APIKey.revoked_at.is_(None),
            )
        )
    ).all()
    now = dt.datetime.now(dt.UTC)
    for key in keys:
        key.revoked_at = now
        await api_keys.record(session, principal, key, "revoke", reason=reason)
    await session.flush()


async def _record_member(
    session: AsyncSession,
    principal: Principal,
    team_id: uuid.UUID,
    user: User | None,
    action: str,
    metadata: dict[str, str],
) -> None:
    if user is not None:
        metadata = {**metadata, "email": user.email}
    await audit.record(
        session,
        actor=principal.actor,
        team_id=team_id,
        resource_type="member",
        resource_id=ids.USER.format(user.id) if user is not None else None,
        action=action,
        metadata=metadata,
    )


async def switch_target(
    session: AsyncSession, *, user_id: uuid.UUID, team_id: uuid.UUID
) -> tuple[Team, str]:
    """The live team `user_id` may switch to and their role in it, read from the database."""
    team = await session.get(Team, team_id)
    if team is None or team.deleted_at is not None:
        raise NotFound("team not found")
    role = await session.scalar(
        select(TeamMember.role).where(TeamMember.team_id == team_id, TeamMember.user_id == user_id)
    )
    if role is None:
        raise Forbidden("not a member of this team")
    return team, role
