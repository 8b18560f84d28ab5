"""Notification channels: a team's webhooks for chosen lifecycle events, managed through
`/v1/channels`, and their deliveries (run by the leader's loop).

A delivery is a POST of the event's JSON body with `X-Wrenn-Timestamp` (Unix seconds) and
`X-Wrenn-Signature: sha256=<hex>`, the HMAC-SHA256 with the channel's secret of
`<timestamp>.<body>`; a receiver recomputes it and refuses old timestamps (replays). The URL must
pass the same checks as a BYOC host's address (no loopback, link-local, private or metadata
addresses unless the operator allows the network), checked on create, update and before every
delivery (a name may resolve elsewhere later). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ... import addresses
from .. import ids
from ..db.models import Event, NotificationChannel
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import BadRequest, Conflict, NotFound
from ..settings import Settings
from . import events

log = logging.getLogger(__name__)

PROVIDERS = ("discord", "slack", "teams", "googlechat", "telegram", "matrix", "webhook")
SUPPORTED = ("webhook",)
# The contract's channel event types -> the stream's event kinds that fire them.
EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "capsule.created": ("capsule.create",),
    "capsule.running": ("capsule.create", "capsule.resume"),
    "capsule.paused": ("capsule.pause",),
    "capsule.destroyed": ("capsule.destroy",),
    "template.snapshot.created": ("template.snapshot.create",),
    "template.snapshot.deleted": ("template.snapshot.delete",),
    "host.up": ("host.up",),
    "host.down": ("host.down",),
}
MAX_URL = 2048
CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Delivery:
    """How deliveries are made: attempts per event, the first retry's wait (doubled each
    time), each attempt's timeout, and where a URL may point."""

    policy: addresses.TenantAddressPolicy
    attempts: int = 4
    backoff: float = 2.0
    timeout: float = 10.0

    @classmethod
    def of(cls, settings: Settings) -> Delivery:
        return cls(
            settings.tenant_address_policy(),
            attempts=settings.channel_delivery_attempts,
            backoff=settings.channel_retry_backoff_sec,
            timeout=settings.channel_delivery_timeout_sec,
        )


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


async def _check_url(url: str, policy: addresses.TenantAddressPolicy) -> addresses.IPAddress:
    """The URL checked; returns the address to dial (the one that was checked, so a name
    that resolves elsewhere a moment later is not followed)."""
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("config.url must be an http or https URL")
    if parts.username or parts.password:
        raise BadRequest("config.url may not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadRequest("config.url has a bad port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        _, ips = await addresses.check_tenant_address(f"{host}:{port}", policy)
    except addresses.AddressError as exc:
        message = str(exc).replace("a team's host", "a channel's URL")
        raise BadRequest(message) from None
    return ips[0]


def _check_events(values: Sequence[str]) -> list[str]:
    unknown = sorted(set(values) - set(EVENT_TYPES))
    if unknown:
        raise BadRequest(f"unknown event types: {', '.join(unknown)}")
    if not values:
        raise BadRequest("events must name at least one event type")
    return sorted(set(values))


async def _config(
    provider: str, config: dict[str, str], policy: addresses.TenantAddressPolicy
) -> tuple[dict[str, Any], str]:
    """The stored config and the secret, checked."""
    if provider not in PROVIDERS:
        raise BadRequest(f"unknown provider {provider!r}")
    if provider not in SUPPORTED:
        raise BadRequest(f"provider {provider!r} is not supported here; use webhook")
    extra = sorted(set(config) - {"url", "secret"})
    if extra:
        raise BadRequest(f"unknown config fields for webhook: {', '.join(extra)}")
    url = config.get("url")
    if not url:
        raise BadRequest("config.url is required")
    await _check_url(url, policy)
    secret = config.get("secret") or secrets.token_urlsafe(32)
    if len(secret) < 16 or len(secret) > 256:
        raise BadRequest("config.secret must be 16 to 256 characters")
    return {"url": url}, secret


def _name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise BadRequest("name must be 1 to 100 characters")
    return name


async def create(
    session: AsyncSession,
    team_id: uuid.UUID,
    *,
    name: str,
    provider: str,
    config: dict[str, str],
    event_types: Sequence[str],
    policy: addresses.TenantAddressPolicy,
) -> NotificationChannel:
    stored, secret = await _config(provider, config, policy)
    channel = NotificationChannel(
        team_id=team_id,
        name=_name(name),
        provider=provider,
        config=stored,
        secret=secret,
        events=_check_events(event_types),
        # Only events from now on are delivered.
        cursor=await events.latest_id(session),
    )
    session.add(channel)
    await _flush_unique(session)
    return channel


async def _flush_unique(session: AsyncSession) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict("a channel with this name already exists in the team") from None


async def list_all(session: AsyncSession, team_id: uuid.UUID) -> list[NotificationChannel]:
    query = (
        select(NotificationChannel)
        .where(NotificationChannel.team_id == team_id)
        .order_by(NotificationChannel.created_at, NotificationChannel.id)
    )
    return list(await session.scalars(query))


async def get(session: AsyncSession, team_id: uuid.UUID, wire_id: str) -> NotificationChannel:
    channel = await session.get(NotificationChannel, ids.CHANNEL.parse(wire_id, not_found=True))
    if channel is None or channel.team_id != team_id:
        raise NotFound("channel not found")
    return channel


async def update(
    session: AsyncSession,
    team_id: uuid.UUID,
    wire_id: str,
    *,
    name: str,
    event_types: Sequence[str],
) -> NotificationChannel:
    channel = await get(session, team_id, wire_id)
    channel.name = _name(name)
    channel.events = _check_events(event_types)
    channel.updated_at = utcnow()
    await _flush_unique(session)
    return channel


async def rotate_config(
    session: AsyncSession,
    team_id: uuid.UUID,
    wire_id: str,
    config: dict[str, str],
    policy: addresses.TenantAddressPolicy,
) -> NotificationChannel:
    channel = await get(session, team_id, wire_id)
    channel.config, channel.secret = await _config(channel.provider, config, policy)
    channel.updated_at = utcnow()
    await session.flush()
    return channel


async def delete(session: AsyncSession, team_id: uuid.UUID, wire_id: str) -> None:
    await session.delete(await get(session, team_id, wire_id))
    await session.flush()


# Deliveries ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int | None
    error: str | None


async def _post_once(url: str, secret: str, body: bytes, delivery: Delivery) -> Outcome:
    try:
        ip = await _check_url(url, delivery.policy)
    except BadRequest as exc:
        return Outcome(False, None, exc.message)
    parts = urlsplit(url)
    hostname = parts.hostname or ""
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    if parts.port:
        netloc += f":{parts.port}"
    pinned = parts._replace(netloc=netloc).geturl()
    timestamp = int(time.time())
    headers = {
        "Host": parts.netloc,
        "Content-Type": "application/json",
        "User-Agent": "wrenn-webhooks",
        "X-Wrenn-Timestamp": str(timestamp),
        "X-Wrenn-Signature": sign(secret, timestamp, body),
    }
    try:
        async with httpx.AsyncClient(timeout=delivery.timeout, follow_redirects=False) as client:
            # TLS is checked against the URL's name (SNI), not the pinned address.
            resp = await client.post(
                pinned, content=body, headers=headers, extensions={"sni_hostname": hostname}
            )
    except httpx.HTTPError as exc:
        return Outcome(False, None, f"request failed: {type(exc).__name__}")
    if 200 <= resp.status_code < 300:
        return Outcome(True, resp.status_code, None)
    return Outcome(False, resp.status_code, f"the receiver answered {resp.status_code}")


async def post(url: str, secret: str, payload: dict[str, Any], delivery: Delivery) -> Outcome:
    """One event to one URL, retried with exponential backoff up to `delivery.attempts`."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    outcome = Outcome(False, None, "not attempted")
    for attempt in range(delivery.attempts):
        if attempt:
            await asyncio.sleep(delivery.backoff * 2 ** (attempt - 1))
        outcome = await _post_once(url, secret, body, delivery)
        if outcome.ok:
            break
    return outcome


async def send_test(provider: str, config: dict[str, str], delivery: Delivery) -> Outcome:
    """A test message to a configuration that is not saved: one attempt."""
    stored, secret = await _config(provider, config, delivery.policy)
    payload = {"event": "test", "timestamp": utcnow().isoformat(), "metadata": {}}
    body = json.dumps(payload, separators=(",", ":")).encode()
    return await _post_once(stored["url"], secret, body, delivery)


async def deliver_pending(db: Database, delivery: Delivery, *, batch: int = 100) -> int:
    """Offer every channel the events of its team after its cursor; returns deliveries made."""
    async with db.sessionmaker() as session, transaction(session):
        channels = list(await session.scalars(select(NotificationChannel)))
    # Channels are delivered side by side (one slow receiver does not hold up the others);
    # each channel's events one after another, in order.
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(channel: NotificationChannel) -> int:
        async with limit:
            return await _deliver_channel(db, channel, delivery, batch)

    made = 0
    results = await asyncio.gather(*(one(c) for c in channels), return_exceptions=True)
    for channel, result in zip(channels, results, strict=True):
        if isinstance(result, BaseException):
            log.error(
                "channel %s: deliveries failed",
                ids.CHANNEL.format(channel.id),
                exc_info=result,
            )
        else:
            made += result
    return made


async def _deliver_channel(
    db: Database, channel: NotificationChannel, delivery: Delivery, batch: int
) -> int:
    kinds = {kind for t in channel.events for kind in EVENT_TYPES.get(t, ())}
    async with db.sessionmaker() as session, transaction(session):
        rows: Sequence[Event] = await events.after(
            session, channel.cursor, team_id=channel.team_id, limit=batch
        )
    made = 0
    for row in rows:
        outcome = None
        if row.kind in kinds:
            outcome = await post(str(channel.config["url"]), channel.secret, row.payload, delivery)
            made += 1
        async with db.sessionmaker() as session, transaction(session, write=True):
            current = await session.get(NotificationChannel, channel.id)
            if current is None:
                return made  # deleted meanwhile
            current.cursor = row.id
            if outcome is not None:
                current.last_status = "success" if outcome.ok else "failed"
                current.last_status_code = outcome.status_code
                current.last_error = outcome.error
                current.last_attempt_at = utcnow()
            if outcome is not None and not outcome.ok:
                log.warning(
                    "channel %s: event %s not delivered: %s",
                    ids.CHANNEL.format(channel.id),
                    row.id,
                    outcome.error,
                )
    return made
