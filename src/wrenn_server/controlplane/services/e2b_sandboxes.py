"""The E2B control API's sandboxes: Wrenn capsules under E2B's names and lifecycle.

A sandbox made here is an ordinary capsule (the capsule services make, pause, resume and
destroy it: quotas, placement, audit, metering and the dashboard see it as any other), plus a
row of `e2b_sandboxes` with what E2B has and Wrenn does not: an absolute end (`timeout` seconds
from the create, a connect or a `set_timeout`), then killed, or paused with `autoPause`, by the
leader's `e2b-lifecycle` loop (e2b_lifecycle.py); and the envVars, given again on a resume.

A capsule made through Wrenn's own API is an E2B sandbox too: without a row, its end is its idle
timeout's (paused at the end), or none; an E2B `set_timeout` gives it E2B's lifecycle.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select

from .. import ids
from ..db.models.capsules import Sandbox
from ..db.models.e2b import E2bSandbox
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import BadRequest, NotFound
from ..security import TokenCodec
from . import audit, capsule_metadata, capsules
from .capsules import Hosts

log = logging.getLogger(__name__)

# The envd version the SDK is told: the highest its feature gates check (e2b 2.x:
# e2b/envd/versions.py), so it uses every call the in-capsule protocol serves.
ENVD_VERSION = "0.6.4"
CLIENT_ID = "wrenn"
# What E2B calls `base`: the platform's base template.
E2B_BASE_TEMPLATE = "base"
# Our statuses as E2B's two states; other statuses are not E2B sandboxes (404, not listed).
STATE_OF = {
    "starting": "running",
    "running": "running",
    "paused": "paused",
    "hibernated": "paused",
    "missing": "paused",
}
STATUSES_OF = {
    "running": ("starting", "running"),
    "paused": ("paused", "hibernated", "missing"),
}
# An end that never comes (a Wrenn capsule without a timeout).
NO_END = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
DEFAULT_LIMIT = 100
MAX_LIMIT = 100
# E2B's API refuses more in one batched metrics call.
MAX_METRIC_IDS = 100


@dataclass(frozen=True)
class Site:
    """What every E2B answer needs from the settings."""

    codec: TokenCodec
    base_template: str
    # The port proxy's domain (`{port}-{id}.{domain}`): the SDK's `sandbox.get_host(port)`.
    domain: str | None


@dataclass(frozen=True)
class NewSandbox:
    template: str
    timeout_sec: int
    auto_pause: bool = False
    auto_resume: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    allow_internet_access: bool | None = None
    # Features the request asked for that Wrenn does not have (names), refused.
    unsupported: tuple[str, ...] = ()
    vcpus: int = 1
    memory_mb: int = 512


@dataclass(frozen=True)
class Reached:
    """A sandbox as a create or connect answers it: with its access tokens."""

    wire_id: str
    template: str
    envd_token: str
    traffic_token: str
    domain: str | None
    resumed: bool = False


@dataclass(frozen=True)
class Listed:
    """A sandbox as E2B lists or describes it."""

    sandbox: Sandbox
    state: str
    end_at: dt.datetime
    on_timeout: str
    envd_token: str


def reached(site: Site, sandbox: Sandbox, *, resumed: bool = False) -> Reached:
    wire_id = ids.SANDBOX.format(sandbox.id)
    return Reached(
        wire_id=wire_id,
        template=sandbox.template,
        envd_token=site.codec.issue_e2b_access(wire_id, sandbox.team_id, "envd"),
        traffic_token=site.codec.issue_e2b_access(wire_id, sandbox.team_id, "traffic"),
        domain=site.domain,
        resumed=resumed,
    )


def _check_supported(spec: NewSandbox) -> None:
    if spec.unsupported:
        raise BadRequest(f"not supported by this server: {', '.join(spec.unsupported)}")
    if spec.allow_internet_access is False:
        # Refused rather than ignored: code that relies on being cut off must not run open.
        raise BadRequest(
            "allow_internet_access=false is not supported: capsules always reach the internet"
        )


async def create(
    db: Database,
    hosts: Hosts,
    site: Site,
    *,
    team_id: uuid.UUID,
    spec: NewSandbox,
    actor: audit.Actor,
) -> Reached:
    _check_supported(spec)
    template = site.base_template if spec.template == E2B_BASE_TEMPLATE else spec.template
    made = await capsules.create_capsule(
        db,
        hosts,
        team_id=team_id,
        spec=capsules.CreateCapsule(
            template,
            spec.vcpus,
            spec.memory_mb,
            # No idle pause: E2B's absolute end is kept by expire_due.
            0,
            auto_resume=spec.auto_resume,
            metadata=spec.metadata,
            env=spec.env,
        ),
        actor=actor,
    )
    try:
        async with db.sessionmaker() as session, transaction(session, write=True):
            session.add(
                E2bSandbox(
                    sandbox_id=made.id,
                    end_at=utcnow() + dt.timedelta(seconds=spec.timeout_sec),
                    auto_pause=spec.auto_pause,
                    env=dict(spec.env),
                )
            )
    except BaseException:
        # Without its lifecycle it would never end: it goes.
        await capsules.destroy_capsule(
            db, hosts, team_id, ids.SANDBOX.format(made.id), actor=audit.SYSTEM
        )
        raise
    return reached(site, made)


async def find(db: Database, team_id: uuid.UUID, wire_id: str) -> tuple[Sandbox, E2bSandbox | None]:
    """A sandbox of the team in one of E2B's states (else 404), and its E2B row if it has one."""
    async with db.sessionmaker() as session:
        sandbox = await capsules.get_capsule(session, team_id, wire_id)
        if sandbox.status not in STATE_OF:
            raise NotFound(f"sandbox {wire_id} not found")
        return sandbox, await session.get(E2bSandbox, sandbox.id)


def _listed(site: Site, sandbox: Sandbox, row: E2bSandbox | None) -> Listed:
    if row is not None:
        end_at, on_timeout = row.end_at, "pause" if row.auto_pause else "kill"
    else:
        since = sandbox.last_active_at or sandbox.started_at or sandbox.created_at
        timeout = sandbox.timeout_sec
        end_at = since + dt.timedelta(seconds=timeout) if timeout else NO_END
        on_timeout = "pause"
    wire_id = ids.SANDBOX.format(sandbox.id)
    return Listed(
        sandbox=sandbox,
        state=STATE_OF[sandbox.status],
        end_at=end_at,
        on_timeout=on_timeout,
        envd_token=site.codec.issue_e2b_access(wire_id, sandbox.team_id, "envd"),
    )


async def get(db: Database, site: Site, team_id: uuid.UUID, wire_id: str) -> Listed:
    sandbox, row = await find(db, team_id, wire_id)
    return _listed(site, sandbox, row)


def parse_metadata_query(text: str | None) -> dict[str, str]:
    """E2B's metadata filter: a URL-encoded `key=value&...` whose keys and values are themselves
    quoted (the SDK's `SandboxQuery(metadata=...)`)."""
    if not text:
        return {}
    pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    if not pairs:
        raise BadRequest("metadata filter must be key=value pairs")
    return capsule_metadata.parse_filter(
        f"{urllib.parse.unquote(k)}:{urllib.parse.unquote(v)}" for k, v in pairs
    )


def parse_states(values: Sequence[str] | None) -> list[str]:
    """E2B's `state` filter (comma-separated or repeated); both states without one."""
    wanted = [s.strip() for v in values or () for s in v.split(",") if s.strip()]
    for state in wanted:
        if state not in STATUSES_OF:
            raise BadRequest(f"unknown state {state[:40]!r}: running or paused")
    return wanted or ["running", "paused"]


@dataclass(frozen=True)
class Page:
    items: list[Listed]
    next_token: str | None


def _cursor(sandbox: Sandbox) -> str:
    return f"{sandbox.created_at.isoformat()}|{sandbox.id}"


async def list_page(
    db: Database,
    site: Site,
    team_id: uuid.UUID,
    *,
    states: Sequence[str],
    metadata: Mapping[str, str],
    template: str | None = None,
    started_after: dt.datetime | None = None,
    order: str = "desc",
    limit: int | None = DEFAULT_LIMIT,
    next_token: str | None = None,
    unpaged: bool = False,
) -> Page:
    """One page of the team's sandboxes, newest first (or oldest with `order=asc`); the next
    page starts after the last one shown (`next_token`, opaque to the caller)."""
    statuses = {s for state in states for s in STATUSES_OF[state]}
    async with db.sessionmaker() as session:
        found = await capsules.list_capsules(session, team_id, statuses, metadata)
        rows = {
            r.sandbox_id: r
            for r in await session.scalars(
                select(E2bSandbox).where(E2bSandbox.sandbox_id.in_([s.id for s in found]))
            )
        }
    if template is not None:
        found = [s for s in found if s.template == template]
    if started_after is not None:
        found = [s for s in found if (s.started_at or s.created_at) > started_after]
    found.sort(key=_cursor, reverse=order != "asc")
    if next_token:
        keys = [_cursor(s) for s in found]
        if next_token not in keys:
            raise BadRequest("invalid nextToken")
        found = found[keys.index(next_token) + 1 :]
    size = len(found) if unpaged else min(limit or DEFAULT_LIMIT, MAX_LIMIT)
    page = found[:size]
    more = len(found) > size
    return Page(
        items=[_listed(site, s, rows.get(s.id)) for s in page],
        next_token=_cursor(page[-1]) if more and page else None,
    )


async def kill(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, *, actor: audit.Actor
) -> None:
    """Destroy it; one already ended is E2B's 404."""
    await find(db, team_id, wire_id)
    await capsules.destroy_capsule(db, hosts, team_id, wire_id, actor=actor)
