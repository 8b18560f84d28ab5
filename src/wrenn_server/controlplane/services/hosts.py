"""Hosts: creation with a one-time registration token, listing, tags and deletion. The agent's
registration and credentials are in `host_credentials.py`, liveness in `host_liveness.py`.

Who may do what:
- regular (shared) hosts: platform admins only;
- BYOC hosts: platform admins, and the owner or an admin of the host's team acting in that team
  (the team must have BYOC enabled and not be deleted); the team's members may list and read
  them. Other teams' hosts are as invisible as missing ones (404).

Host events are admin-scope: in the owning team's log for BYOC hosts, platform-wide (no team)
for shared ones.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import Sandbox, Team
from ..db.models.hosts import Host, HostTag, HostToken
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import (
    BadRequest,
    Forbidden,
    HostAgentError,
    HostHasCapsules,
    HostUnavailable,
    InvalidState,
    NotFound,
)
from ..security import (
    HOST_REGISTRATION_PREFIX,
    generate_credential,
)
from . import audit, capsules
from .capsules import Hosts
from .principals import Principal
from .teams import ADMIN_ROLES, acting_role

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostView:
    host: Host
    team_name: str | None
    tags: list[str]


# Access ---------------------------------------------------------------------------------------


async def _byoc_team(session: AsyncSession, principal: Principal, team_id: uuid.UUID) -> Team:
    """The team, if the caller may manage its BYOC hosts (whether or not it may add more)."""
    if principal.is_admin:
        team = await session.get(Team, team_id)
        if team is None or team.deleted_at is not None:
            raise NotFound("team not found")
        return team
    team, role = await acting_role(session, principal, team_id)
    if role not in ADMIN_ROLES:
        raise Forbidden("managing BYOC hosts needs the team's owner or an admin")
    return team


async def _visible(session: AsyncSession, principal: Principal, host_id: uuid.UUID) -> Host:
    host = await session.get(Host, host_id)
    if host is None:
        raise NotFound("host not found")
    if principal.is_admin:
        return host
    if host.type != "byoc" or host.team_id is None or host.team_id != principal.team_id:
        raise NotFound("host not found")
    return host


async def _manageable(session: AsyncSession, principal: Principal, host_id: uuid.UUID) -> Host:
    host = await _visible(session, principal, host_id)
    if not principal.is_admin:
        assert host.team_id is not None
        await _byoc_team(session, principal, host.team_id)
    return host


async def record(
    session: AsyncSession,
    host: Host,
    *,
    actor: audit.Actor,
    action: str,
    status: audit.Status = "success",
    metadata: dict[str, Any] | None = None,
) -> None:
    """Audit a host event (admin scope; the host's type and address always in the metadata)."""
    await audit.record(
        session,
        actor=actor,
        team_id=host.team_id,
        resource_type="host",
        resource_id=ids.HOST.format(host.id),
        action=action,
        scope="admin",
        status=status,
        metadata={"type": host.type, "address": host.address, **(metadata or {})},
    )


# Create, read, tokens ------------------------------------------------------------------------


async def _new_registration_token(
    session: AsyncSession, host: Host, created_by: uuid.UUID | None, ttl: dt.timedelta
) -> str:
    new = generate_credential(HOST_REGISTRATION_PREFIX)
    session.add(
        HostToken(
            host_id=host.id,
            token_hash=new.hash,
            created_by=created_by,
            expires_at=utcnow() + ttl,
        )
    )
    await session.flush()
    return new.plaintext


async def create_host(
    session: AsyncSession,
    *,
    principal: Principal,
    type: str,
    team_id: uuid.UUID | None,
    provider: str | None,
    availability_zone: str | None,
    registration_ttl: dt.timedelta,
) -> tuple[HostView, str]:
    """A pending host and its one-time registration token."""
    team: Team | None = None
    if type == "regular":
        if team_id is not None:
            raise BadRequest("regular hosts are shared: team_id is for BYOC hosts only")
        if not principal.is_admin:
            raise Forbidden("creating shared hosts needs a platform admin")
    else:
        if team_id is None:
            raise BadRequest("team_id is required for a BYOC host")
        team = await _byoc_team(session, principal, team_id)
        if not team.is_byoc:
            raise Forbidden("this team may not register its own hosts (BYOC is off)")
    host = Host(
        id=ids.new_id(),
        type=type,
        team_id=team.id if team else None,
        provider=provider,
        availability_zone=availability_zone,
        status="pending",
        created_by=principal.user_id,
    )
    session.add(host)
    await session.flush()
    token = await _new_registration_token(session, host, principal.user_id, registration_ttl)
    await record(session, host, actor=principal.actor, action="add")
    return HostView(host, team.name if team else None, []), token


async def regenerate_token(
    session: AsyncSession, *, principal: Principal, host_id: uuid.UUID, ttl: dt.timedelta
) -> tuple[HostView, str]:
    """A new registration token for a host that has not registered; earlier ones stop working."""
    host = await _manageable(session, principal, host_id)
    if host.status != "pending":
        raise InvalidState(f"host is {host.status}: only a pending host can register")
    await session.execute(
        update(HostToken)
        .where(HostToken.host_id == host.id, HostToken.used_at.is_(None))
        .values(expires_at=utcnow())
    )
    token = await _new_registration_token(session, host, principal.user_id, ttl)
    return await _view(session, host), token


async def _view(session: AsyncSession, host: Host) -> HostView:
    team_name = None
    if host.team_id is not None:
        team_name = await session.scalar(select(Team.name).where(Team.id == host.team_id))
    return HostView(host, team_name, await _tags(session, host.id))


async def _tags(session: AsyncSession, host_id: uuid.UUID) -> list[str]:
    rows = await session.scalars(
        select(HostTag.tag).where(HostTag.host_id == host_id).order_by(HostTag.tag)
    )
    return list(rows)


async def list_hosts(session: AsyncSession, *, principal: Principal) -> list[HostView]:
    """Platform admins: every host. Others: their active team's BYOC hosts."""
    query = select(Host, Team.name).outerjoin(Team, Team.id == Host.team_id)
    if not principal.is_admin:
        query = query.where(Host.type == "byoc", Host.team_id == principal.require_team())
    rows = (await session.execute(query.order_by(Host.created_at, Host.id))).all()
    tags: dict[uuid.UUID, list[str]] = {}
    if rows:
        tag_rows = await session.execute(
            select(HostTag.host_id, HostTag.tag)
            .where(HostTag.host_id.in_([host.id for host, _ in rows]))
            .order_by(HostTag.tag)
        )
        for host_id, tag in tag_rows:
            tags.setdefault(host_id, []).append(tag)
    return [HostView(host, name, tags.get(host.id, [])) for host, name in rows]


async def get_host(session: AsyncSession, *, principal: Principal, host_id: uuid.UUID) -> HostView:
    return await _view(session, await _visible(session, principal, host_id))


# Tags -----------------------------------------------------------------------------------------


async def list_tags(
    session: AsyncSession, *, principal: Principal, host_id: uuid.UUID
) -> list[str]:
    host = await _visible(session, principal, host_id)
    return await _tags(session, host.id)


async def add_tag(
    session: AsyncSession, *, principal: Principal, host_id: uuid.UUID, tag: str
) -> None:
    """Idempotent: adding a tag the host has is a no-op."""
    host = await _manageable(session, principal, host_id)
    if await session.get(HostTag, (host.id, tag)) is None:
        session.add(HostTag(host_id=host.id, tag=tag))
        await session.flush()


async def remove_tag(
    session: AsyncSession, *, principal: Principal, host_id: uuid.UUID, tag: str
) -> None:
    host = await _manageable(session, principal, host_id)
    removed = await session.execute(
        delete(HostTag).where(HostTag.host_id == host.id, HostTag.tag == tag)
    )
    if not getattr(removed, "rowcount", 0):
        raise NotFound("tag not found")


# Deletion -------------------------------------------------------------------------------------


async def _live_capsules(session: AsyncSession, host_id: uuid.UUID) -> Sequence[Sandbox]:
    rows = await session.scalars(
        select(Sandbox)
        .where(Sandbox.host_id == host_id, Sandbox.status.in_(capsules.LIVE))
        .order_by(Sandbox.created_at)
    )
    return rows.all()


async def delete_preview(
    session: AsyncSession, *, principal: Principal, host_id: uuid.UUID
) -> tuple[HostView, list[str]]:
    host = await _manageable(session, principal, host_id)
    live = await _live_capsules(session, host.id)
    return await _view(session, host), [ids.SANDBOX.format(s.id) for s in live]


async def delete_host(
    db: Database, hosts: Hosts, *, principal: Principal, host_id: uuid.UUID, force: bool
) -> None:
    """Delete a host. With live capsules: 409 listing them, unless `force`, which destroys them
    first (on an unreachable host they are only marked stopped: their files go with the host).
    Deleting the row revokes the host's tokens, so its agent pauses what it still runs."""
    async with db.sessionmaker() as session, transaction(session):
        host = await _manageable(session, principal, host_id)
        live = [(s.id, s.team_id) for s in await _live_capsules(session, host.id)]
        reachable = host.status == "online"
    if live and not force:
        raise HostHasCapsules(
            f"host has {len(live)} active capsule(s); delete with force=true to destroy them",
            sandbox_ids=[ids.SANDBOX.format(sandbox_id) for sandbox_id, _ in live],
        )
    for sandbox_id, team_id in live:
        wire_id = ids.SANDBOX.format(sandbox_id)
        if reachable:
            try:
                await capsules.destroy_capsule(db, hosts, team_id, wire_id, actor=principal.actor)
                continue
            except (HostAgentError, HostUnavailable):
                log.warning("host %s did not destroy %s; marking it stopped", host_id, wire_id)
        # Not asked when it is away (every call would wait for its timeout), or it failed.
        await capsules.mark_stopped(db, sandbox_id, actor=principal.actor, reason="host deleted")
    async with db.sessionmaker() as session, transaction(session, write=True):
        host = await _manageable(session, principal, host_id)
        # A capsule placed on the host meanwhile would lose its host: refuse, let them retry.
        if await _live_capsules(session, host.id):
            raise InvalidState("capsules were started on the host meanwhile: try again")
        await record(
            session,
            host,
            actor=principal.actor,
            action="delete",
            metadata={"forced": force, "capsules_destroyed": len(live)},
        )
        await session.delete(host)
        await session.flush()
    await hosts.pool.evict(host_id)
