"""Hosts: creation with a one-time registration token, the agent's registration, heartbeats and
token refresh, tags, deletion, and the liveness rules the host monitor applies.

Who may do what:
- regular (shared) hosts: platform admins only;
- BYOC hosts: platform admins, and the owner or an admin of the host's team acting in that team
  (the team must have BYOC enabled and not be deleted); the team's members may list and read
  them. Other teams' hosts are as invisible as missing ones (404).

Liveness: a host is *seen* when its agent heartbeats or answers the reconciler. One not seen for
`down_after` is marked unreachable (audit `marked_down`) and its capsules missing; seen again, it
is online (audit `marked_up`) and the reconciler restores its capsules. Host events are
admin-scope: in the owning team's log for BYOC hosts, platform-wide (no team) for shared ones.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ...addresses import (
    METADATA_IPS,
    METADATA_NAMES,
    AddressError,
    TcpAddress,
    TenantAddressPolicy,
    check_tenant_address,
)
from ...addresses import parse as parse_address
from .. import ids
from ..db.models import Sandbox, Team
from ..db.models.hosts import Host, HostRefreshToken, HostTag, HostToken
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import (
    BadRequest,
    Forbidden,
    HostAgentError,
    HostHasCapsules,
    InvalidState,
    NotFound,
    Unauthorized,
)
from ..security import (
    HOST_REFRESH_PREFIX,
    HOST_REGISTRATION_PREFIX,
    TokenCodec,
    generate_credential,
    hash_credential,
)
from . import audit, capsules
from .capsules import Hosts
from .principals import Principal
from .teams import ADMIN_ROLES, acting_role

log = logging.getLogger(__name__)

# How often a seen host's last_heartbeat_at is rewritten: liveness needs seconds, not every call.
SEEN_RESOLUTION = dt.timedelta(seconds=10)


@dataclass(frozen=True)
class HostLifetimes:
    jwt: dt.timedelta
    refresh: dt.timedelta
    registration: dt.timedelta


@dataclass(frozen=True)
class HostView:
    host: Host
    team_name: str | None
    tags: list[str]


@dataclass(frozen=True)
class IssuedCredentials:
    host: Host
    token: str
    refresh_token: str
    agent_secret: str


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


async def _record(
    session: AsyncSession,
    host: Host,
    *,
    actor: audit.Actor,
    action: str,
    status: audit.Status = "success",
    metadata: dict[str, Any] | None = None,
) -> None:
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
    await _record(session, host, actor=principal.actor, action="add")
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


# Registration, heartbeat, refresh -------------------------------------------------------------


async def _issue(
    session: AsyncSession, codec: TokenCodec, host: Host, lifetimes: HostLifetimes
) -> IssuedCredentials:
    refresh = generate_credential(HOST_REFRESH_PREFIX)
    session.add(
        HostRefreshToken(
            host_id=host.id, token_hash=refresh.hash, expires_at=utcnow() + lifetimes.refresh
        )
    )
    await session.flush()
    return IssuedCredentials(
        host=host,
        token=codec.issue_host(host.id, lifetimes.jwt),
        refresh_token=refresh.plaintext,
        agent_secret=codec.agent_secret(host.id),
    )


async def register_host(
    session: AsyncSession,
    *,
    codec: TokenCodec,
    lifetimes: HostLifetimes,
    token: str,
    address: str,
    arch: str | None,
    cpu_cores: int | None,
    memory_mb: int | None,
    disk_gb: int | None,
    tls_certificate: str | None,
    address_policy: TenantAddressPolicy,
) -> IssuedCredentials:
    """Redeem a registration token: the host goes online with the agent's address (in its
    canonical form), specs and TLS certificate (pinned: only the agent holding its key can
    answer for this host). A BYOC host's address must pass `address_policy`."""
    now = utcnow()
    row = await session.scalar(
        select(HostToken).where(HostToken.token_hash == hash_credential(token))
    )
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise Unauthorized("invalid, used or expired registration token")
    # Claimed with a conditional update, so two agents racing with one token cannot both win.
    claimed = await session.execute(
        update(HostToken)
        .where(HostToken.id == row.id, HostToken.used_at.is_(None))
        .values(used_at=now)
    )
    host = await session.get(Host, row.host_id)
    if not getattr(claimed, "rowcount", 0) or host is None or host.status != "pending":
        raise Unauthorized("invalid, used or expired registration token")
    if host.type == "byoc":
        address = await _check_byoc_address(address, address_policy)
    else:
        address = _check_shared_address(address)
    host.address = address
    host.tls_certificate = tls_certificate
    host.arch, host.cpu_cores, host.memory_mb, host.disk_gb = arch, cpu_cores, memory_mb, disk_gb
    host.status = "online"
    host.last_heartbeat_at = now
    issued = await _issue(session, codec, host, lifetimes)
    await _record(session, host, actor=audit.SYSTEM, action="register", status="info")
    return issued


async def _check_byoc_address(address: str, policy: TenantAddressPolicy) -> str:
    """A BYOC host's team chooses the address the control plane dials: it may not point the
    control plane at itself, its metadata service or a socket on its machine, however written
    (see addresses.py). The pool checks it again whenever it dials."""
    try:
        parsed, _ips = await check_tenant_address(address, policy)
    except AddressError as e:
        raise BadRequest(str(e)) from None
    return str(parsed)


def _check_shared_address(address: str) -> str:
    """A shared host is the platform's own: any address its operator chose (loopback and
    private ones, a unix socket), but never a cloud metadata service."""
    try:
        parsed = parse_address(address)
    except AddressError as e:
        raise BadRequest(str(e)) from None
    if isinstance(parsed, TcpAddress) and (
        parsed.host in METADATA_NAMES or parsed.ip in METADATA_IPS
    ):
        raise BadRequest("a host may not be reached at a cloud metadata service's address")
    return str(parsed)


async def refresh_credentials(
    session: AsyncSession, *, codec: TokenCodec, lifetimes: HostLifetimes, refresh_token: str
) -> IssuedCredentials:
    """A new host JWT and refresh token; the presented refresh token is revoked."""
    now = utcnow()
    row = await session.scalar(
        select(HostRefreshToken).where(
            HostRefreshToken.token_hash == hash_credential(refresh_token)
        )
    )
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("invalid, revoked or expired refresh token")
    revoked = await session.execute(
        update(HostRefreshToken)
        .where(HostRefreshToken.id == row.id, HostRefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    host = await session.get(Host, row.host_id)
    if not getattr(revoked, "rowcount", 0) or host is None:
        raise Unauthorized("invalid, revoked or expired refresh token")
    return await _issue(session, codec, host, lifetimes)


async def authenticate_host(
    session: AsyncSession, *, codec: TokenCodec, token: str, wire_id: str
) -> Host:
    """The host a host JWT names, which must be the host of the URL (403 otherwise). The token
    is checked first: a caller without valid credentials learns nothing about the URL."""
    token_host = codec.verify_host(token)
    host = await session.get(Host, token_host)
    if host is None or host.status == "pending":
        raise Unauthorized("host not registered")
    if wire_id != ids.HOST.format(host.id):
        raise Forbidden("the token belongs to another host")
    return host


async def mark_seen(session: AsyncSession, host: Host, *, now: dt.datetime | None = None) -> None:
    """The host's agent heartbeated or answered: it is alive."""
    now = now or utcnow()
    if host.status == "online" and host.last_heartbeat_at is not None:
        if now - host.last_heartbeat_at < SEEN_RESOLUTION:
            return
    host.last_heartbeat_at = now
    if host.status in ("unreachable", "offline"):
        down_since = host.updated_at
        host.status = "online"
        await _record(
            session,
            host,
            actor=audit.SYSTEM,
            action="marked_up",
            status="info",
            metadata={"down_since": down_since.isoformat()},
        )
    await session.flush()


async def mark_stale_down(
    session: AsyncSession, *, down_after: dt.timedelta, now: dt.datetime | None = None
) -> list[Host]:
    """Online hosts not seen for `down_after` become unreachable; their capsules missing."""
    now = now or utcnow()
    stale = list(
        await session.scalars(
            select(Host).where(
                Host.status == "online",
                or_(Host.last_heartbeat_at.is_(None), Host.last_heartbeat_at < now - down_after),
            )
        )
    )
    for host in stale:
        host.status = "unreachable"
        missing = list(
            await session.scalars(
                select(Sandbox).where(
                    Sandbox.host_id == host.id,
                    Sandbox.status.in_(("starting", "running", "paused")),
                )
            )
        )
        for sandbox in missing:
            await capsules.set_status_by_system(session, sandbox, "missing", host.id)
        last_seen = host.last_heartbeat_at.isoformat() if host.last_heartbeat_at else None
        log.warning("host %s not seen since %s: marked unreachable", host.id, last_seen)
        await _record(
            session,
            host,
            actor=audit.SYSTEM,
            action="marked_down",
            status="warning",
            metadata={"last_seen": last_seen, "capsules_missing": len(missing)},
        )
    await session.flush()
    return stale


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
            except HostAgentError:
                log.warning("host %s did not destroy %s; marking it stopped", host_id, wire_id)
        # Not asked when it is away (every call would wait for its timeout), or it failed.
        await capsules.mark_stopped(db, sandbox_id, actor=principal.actor, reason="host deleted")
    async with db.sessionmaker() as session, transaction(session, write=True):
        host = await _manageable(session, principal, host_id)
        # A capsule placed on the host meanwhile would lose its host: refuse, let them retry.
        if await _live_capsules(session, host.id):
            raise InvalidState("capsules were started on the host meanwhile: try again")
        await _record(
            session,
            host,
            actor=principal.actor,
            action="delete",
            metadata={"forced": force, "capsules_destroyed": len(live)},
        )
        await session.delete(host)
        await session.flush()
    await hosts.pool.evict(host_id)
