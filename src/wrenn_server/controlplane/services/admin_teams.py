"""Platform admins' view of teams: the paged list (as the Go system returns it) and deleting a
team.

Deleting a team destroys its capsules first (each on its host; one whose host cannot be reached is
recorded stopped, and the reconciler destroys it when the host is back), deletes its templates
where their hosts can be reached, then in one transaction revokes its API keys, removes its
members and notification channels and marks it deleted. The row (and so its slug and audit
trail) stays. The platform team cannot be deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from .. import ids
from ..db.models import APIKey, Sandbox, Team, TeamMember, Template, User
from ..db.models.channels import NotificationChannel
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import DomainError, Forbidden, NotFound
from . import audit, capsules, snapshots
from .capsules import Hosts

log = logging.getLogger("wrenn.controlplane.admin")

# A capsule in one of these holds nothing on its host any more.
_DEAD_CAPSULE_STATUSES = ("stopped", "error")
# The Go system's "active sandboxes" of a team.
_ACTIVE_CAPSULE_STATUSES = ("running", "paused", "starting")


@dataclass(frozen=True, slots=True)
class TeamRow:
    team: Team
    member_count: int
    owner_name: str
    owner_email: str
    active_capsule_count: int
    channel_count: int


async def list_teams(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[TeamRow], int]:
    """One page of every team but the platform's, deleted ones included (last): live teams
    newest first, as the Go system orders them; and how many there are in all."""
    members = (
        select(func.count()).where(TeamMember.team_id == Team.id).correlate(Team).scalar_subquery()
    )
    active = (
        select(func.count())
        .where(Sandbox.team_id == Team.id, Sandbox.status.in_(_ACTIVE_CAPSULE_STATUSES))
        .correlate(Team)
        .scalar_subquery()
    )
    channels = (
        select(func.count())
        .where(NotificationChannel.team_id == Team.id)
        .correlate(Team)
        .scalar_subquery()
    )
    owner_membership = aliased(TeamMember)
    owner = aliased(User)
    rows = await session.execute(
        select(Team, members, owner.name, owner.email, active, channels)
        .outerjoin(
            owner_membership,
            (owner_membership.team_id == Team.id) & (owner_membership.role == "owner"),
        )
        .outerjoin(owner, owner.id == owner_membership.user_id)
        .where(Team.id != ids.PLATFORM_TEAM_ID)
        .order_by(Team.deleted_at.asc().nulls_first(), Team.created_at.desc(), Team.id)
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(
        select(func.count()).select_from(Team).where(Team.id != ids.PLATFORM_TEAM_ID)
    )
    return [
        TeamRow(
            team=team,
            member_count=int(n_members or 0),
            owner_name=owner_name or "",
            owner_email=owner_email or "",
            active_capsule_count=int(n_active or 0),
            channel_count=int(n_channels or 0),
        )
        for team, n_members, owner_name, owner_email, n_active, n_channels in rows
    ], int(total or 0)


async def _deletable(session: AsyncSession, team_id: uuid.UUID, *, lock: bool = False) -> Team:
    if team_id == ids.PLATFORM_TEAM_ID:
        raise Forbidden("the platform team cannot be deleted")
    team = await session.get(Team, team_id, with_for_update=lock)
    if team is None or team.deleted_at is not None:
        raise NotFound("team not found")
    return team


async def delete_team(
    db: Database,
    hosts: Hosts,
    *,
    actor: audit.Actor,
    team_id: uuid.UUID,
    protected_template: str | None = None,
) -> None:
    """Delete a team (platform admins): see the module's docstring. `NotFound` for an unknown or
    already deleted team, `Forbidden` for the platform's."""
    async with db.sessionmaker() as session, transaction(session):
        await _deletable(session, team_id)
        live = list(
            await session.scalars(
                select(Sandbox.id).where(
                    Sandbox.team_id == team_id, Sandbox.status.not_in(_DEAD_CAPSULE_STATUSES)
                )
            )
        )
        template_names = list(
            await session.scalars(select(Template.name).where(Template.team_id == team_id))
        )
    unreachable = 0
    for sandbox_id in live:
        try:
            await capsules.destroy_capsule(
                db, hosts, team_id, ids.SANDBOX.format(sandbox_id), actor=actor
            )
        except NotFound:
            continue  # gone in between
        except DomainError as exc:
            # Its host cannot be reached (or failed): the capsule is recorded stopped anyway,
            # and the reconciler destroys it on the host once it is back.
            log.warning("team delete: capsule %s not destroyed on its host: %s", sandbox_id, exc)
            await capsules.mark_stopped(db, sandbox_id, actor=actor, reason="team_deleted")
            unreachable += 1
    templates_left: list[str] = []
    for name in template_names:
        try:
            await snapshots.delete_snapshot(
                db,
                hosts,
                team_id=None,
                name=name,
                is_admin=True,
                actor=actor,
                protected=protected_template,
                owner=team_id,
            )
        except NotFound:
            continue
        except DomainError as exc:
            # Its record stays (no team can use it any more) so the files can still be found.
            log.warning("team delete: template %s not deleted: %s", name, exc)
            templates_left.append(name)
    async with db.sessionmaker() as session, transaction(session, write=True):
        await _finish(
            session,
            actor=actor,
            team_id=team_id,
            metadata={
                "capsules_destroyed": len(live),
                "capsules_host_unreachable": unreachable,
                "templates_deleted": len(template_names) - len(templates_left),
                "templates_left": templates_left,
            },
        )


async def _finish(
    session: AsyncSession, *, actor: audit.Actor, team_id: uuid.UUID, metadata: dict[str, object]
) -> None:
    """Revoke the keys, remove members and channels, mark the team deleted, and stop a capsule
    created while its capsules were being destroyed (the reconciler destroys it on its host)."""
    team = await _deletable(session, team_id, lock=True)
    now = dt.datetime.now(dt.UTC)
    revoked = await session.execute(
        update(APIKey)
        .where(APIKey.team_id == team_id, APIKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    members = await session.execute(delete(TeamMember).where(TeamMember.team_id == team_id))
    await session.execute(delete(NotificationChannel).where(NotificationChannel.team_id == team_id))
    await session.execute(
        update(Sandbox)
        .where(Sandbox.team_id == team_id, Sandbox.status.not_in(_DEAD_CAPSULE_STATUSES))
        .values(status="stopped", last_updated=utcnow())
    )
    team.deleted_at = now
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        team_id=team_id,
        resource_type="team",
        resource_id=ids.TEAM.format(team_id),
        action="delete",
        scope="admin",
        metadata={
            "name": team.name,
            "api_keys_revoked": revoked.rowcount,  # type: ignore[attr-defined]
            "members_removed": members.rowcount,  # type: ignore[attr-defined]
            **metadata,
        },
    )
