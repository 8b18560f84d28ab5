"""A host's agent credentials: redeeming the one-time registration token (address checked,
TLS certificate pinned), refreshing the host JWT, and authenticating the agent's calls."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
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
from ..db.models.hosts import Host, HostRefreshToken, HostToken
from ..db.types import utcnow
from ..errors import BadRequest, Forbidden, Unauthorized
from ..security import HOST_REFRESH_PREFIX, TokenCodec, generate_credential, hash_credential
from . import audit
from .hosts import record


@dataclass(frozen=True)
class HostLifetimes:
    jwt: dt.timedelta
    refresh: dt.timedelta
    registration: dt.timedelta


@dataclass(frozen=True)
class IssuedCredentials:
    host: Host
    token: str
    refresh_token: str
    agent_secret: str


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
    await record(session, host, actor=audit.SYSTEM, action="register", status="info")
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
