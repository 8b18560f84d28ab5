"""Capsule operations: the database row plus the host agent calls behind it.

Agent calls can take from milliseconds to seconds, so no database transaction is held open
across one: each operation records its intent, calls the agent, then records the outcome, each
step in its own short transaction. A failed create deletes its row, so nothing half-created
stays behind. Each successful lifecycle change is audited (resource_type `sandbox`) in the
transaction that records its outcome.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ...addresses import AddressError, UnixAddress
from ...addresses import parse as parse_address
from ...agentproto.client import AgentClient
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..agents import call_timeouts
from ..agents.pool import HostClientPool
from ..agents.rpc import agent_errors
from ..agents.scheduler import Scheduler
from ..db.models.capsules import SANDBOX_STATUSES, Sandbox, Template
from ..db.models.hosts import Host
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import BadRequest, InsufficientCapacity, InvalidState, NotFound
from . import (
    audit,
    capsule_metadata,
    capsule_routes,
    metrics,
    parking,
    proxy_resume,
    quotas,
    templates,
)
from .capsule_routes import CapsuleRoutes
from .capsule_status import StatusEvent, set_status
from .templates import visible_template as visible_template

LIVE = ("starting", "running", "paused", "missing")


@dataclass
class Hosts:
    """What capsule operations need to reach hosts, and the platform's default quotas they
    enforce."""

    pool: HostClientPool
    scheduler: Scheduler
    limits: quotas.Limits = quotas.DEFAULT_LIMITS
    # Where running capsules are, for calls into them (see capsule_routes.py).
    routes: CapsuleRoutes = field(default_factory=CapsuleRoutes)

    async def client_for(self, session: AsyncSession, sandbox: Sandbox) -> AgentClient:
        host = await session.get(Host, sandbox.host_id) if sandbox.host_id else None
        if host is None or not host.address:
            raise InvalidState("the capsule's host is gone")
        return await self.client_of(host)

    async def client_of(self, host: Host) -> AgentClient:
        """The host's agent client; an address the pool may not dial is an unreachable host."""
        with agent_errors():
            return await self.pool.client(host)


@dataclass(frozen=True)
class CreateCapsule:
    template: str
    vcpus: int
    memory_mb: int
    # None: the team's parking policy decides (services/parking.py).
    timeout_sec: int | None
    disk_size_mb: int = 5120
    public_ports: tuple[int, ...] = ()
    auto_resume: bool | None = False
    # The creator's labels (checked by create_capsule).
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Added to the template's default environment (E2B's envVars).
    env: Mapping[str, str] = field(default_factory=dict)


async def get_capsule(session: AsyncSession, team_id: uuid.UUID, wire_id: str) -> Sandbox:
    """A capsule of the team; another team's capsule is as invisible as a missing one."""
    sandbox = await session.get(Sandbox, ids.SANDBOX.parse(wire_id, not_found=True))
    if sandbox is None or sandbox.team_id != team_id:
        raise NotFound("capsule not found")
    return sandbox


# What a list shows unless asked for other statuses: not the ended capsules (the Go system's).
ENDED_STATUSES = ("stopped", "error")


async def list_capsules(
    session: AsyncSession,
    team_id: uuid.UUID,
    statuses: Collection[str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[Sandbox]:
    """The team's capsules, newest first: those in `statuses`, or all but the ended ones; with
    `metadata`, only those carrying every one of its key/value pairs."""
    if statuses is not None:
        unknown = sorted(set(statuses) - set(SANDBOX_STATUSES))
        if unknown:
            raise BadRequest(
                f"unknown status {', '.join(unknown)}: one of {', '.join(SANDBOX_STATUSES)}"
            )
    query = select(Sandbox).where(Sandbox.team_id == team_id)
    if statuses is None:
        query = query.where(Sandbox.status.not_in(ENDED_STATUSES))
    else:
        query = query.where(Sandbox.status.in_(statuses))
    for key, value in (metadata or {}).items():
        query = query.where(Sandbox.meta[key].as_string() == value)
    return list(await session.scalars(query.order_by(Sandbox.created_at.desc())))


async def update_capsule(
    session: AsyncSession,
    team_id: uuid.UUID,
    wire_id: str,
    *,
    public_ports: list[int] | None,
    auto_resume: bool | None,
    actor: audit.Actor,
) -> Sandbox:
    """Change how the port proxy treats the capsule; None leaves a setting as it is."""
    sandbox = await get_capsule(session, team_id, wire_id)
    changed: dict[str, Any] = {}
    if public_ports is not None and public_ports != list(sandbox.public_ports or []):
        sandbox.public_ports = changed["public_ports"] = list(public_ports)
    if auto_resume is not None and auto_resume != sandbox.auto_resume:
        sandbox.auto_resume = changed["auto_resume"] = auto_resume
    if changed:
        sandbox.last_updated = utcnow()
        await audit.record(
            session,
            actor=actor,
            team_id=team_id,
            resource_type="sandbox",
            resource_id=ids.SANDBOX.format(sandbox.id),
            action="update",
            metadata=changed,
        )
        await session.flush()
    return sandbox


def require_status(sandbox: Sandbox, *allowed: str) -> None:
    if sandbox.status not in allowed:
        raise InvalidState(f"capsule is {sandbox.status}, not {' or '.join(allowed)}")


async def create_capsule(
    db: Database, hosts: Hosts, *, team_id: uuid.UUID, spec: CreateCapsule, actor: audit.Actor
) -> Sandbox:
    # The quota check, the placement and the row that holds the slot commit together, under
    # the team's lock: a concurrent create of the same team sees this one's row.
    labels = capsule_metadata.labels(spec.metadata)
    async with db.sessionmaker() as session, transaction(session, write=True):
        template = await visible_template(session, team_id, spec.template)
        vcpus, memory_mb = _size(template, spec)
        team = await quotas.check(
            session,
            team_id,
            hosts.limits,
            vcpus=vcpus,
            memory_mb=memory_mb,
            disk_mb=spec.disk_size_mb,
        )
        host = await hosts.scheduler.pick(
            session, team_id, template, memory_mb, vcpus=vcpus, disk_mb=spec.disk_size_mb
        )
        policy = parking.OFF
        if spec.timeout_sec is None or spec.auto_resume is None:
            # The quota check has the team's row (locked); the platform team's is read.
            policy = (
                parking.of(team) if team is not None else await parking.of_team(session, team_id)
            )
        timeout_sec, auto_resume = parking.applied(policy, spec.timeout_sec, spec.auto_resume)
        sandbox = Sandbox(
            id=ids.new_id(),
            team_id=team_id,
            host_id=host.id,
            template=template.name,
            template_id=template.id,
            status="starting",
            vcpus=vcpus,
            memory_mb=memory_mb,
            disk_size_mb=spec.disk_size_mb,
            timeout_sec=timeout_sec,
            public_ports=list(spec.public_ports),
            auto_resume=auto_resume,
            meta=labels,
        )
        session.add(sandbox)
        client = await hosts.client_of(host)
        host_ip = _host_ip(host.address or "")
        default_user = template.default_user or ""
        default_env = {**(template.default_env or {}), **spec.env}
        stored_as = template.storage_name
    request = pb.CreateSandboxRequest(
        sandbox_id=ids.SANDBOX.format(sandbox.id),
        template=stored_as,
        vcpus=vcpus,
        memory_mb=memory_mb,
        disk_size_mb=spec.disk_size_mb,
        timeout_sec=timeout_sec,
        default_user=default_user,
        default_env=default_env,
    )
    try:
        # The capsule is new: what the agent may not find is its template (files missing); what
        # it has no room for, the host (full since placement, or by what the database does not
        # see).
        with agent_errors(not_found=BadRequest, exhausted=InsufficientCapacity):
            made = await client.create_sandbox(request)
    except BaseException:
        async with db.sessionmaker() as session, transaction(session, write=True):
            await session.execute(delete(Sandbox).where(Sandbox.id == sandbox.id))
        raise
    return await set_status(
        db,
        sandbox.id,
        "running",
        started=True,
        host_ip=host_ip if host_ip else None,
        reported=made.metadata,
        event=StatusEvent(
            actor,
            "create",
            {"template": sandbox.template, "vcpus": vcpus, "memory_mb": memory_mb},
        ),
        routes=hosts.routes,
    )


def _size(template: Template, spec: CreateCapsule) -> tuple[int, int]:
    """The vCPUs and memory the capsule will have: a snapshot's own (the agent restores it as
    it was), else what was asked. Quotas and placement count these, not the request's."""
    if template.type == "snapshot":
        return template.vcpus or spec.vcpus, template.memory_mb or spec.memory_mb
    return spec.vcpus, spec.memory_mb


def _host_ip(address: str) -> str:
    """The host part of an agent address (at most 45 characters: an IP address, a short name);
    an agent on a local unix socket is this machine."""
    try:
        parsed = parse_address(address)
    except AddressError:
        return ""
    if isinstance(parsed, UnixAddress):
        return "127.0.0.1"
    return parsed.host if len(parsed.host) <= 45 else ""


async def _load(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, *allowed: str
) -> tuple[Sandbox, AgentClient]:
    async with db.sessionmaker() as session, transaction(session):
        sandbox = await get_capsule(session, team_id, wire_id)
        if allowed:
            require_status(sandbox, *allowed)
        return sandbox, await hosts.client_for(session, sandbox)


async def destroy_capsule(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, *, actor: audit.Actor
) -> None:
    async with db.sessionmaker() as session, transaction(session):
        sandbox = await get_capsule(session, team_id, wire_id)
        if sandbox.status in ("stopped", "error"):
            return
        host = await session.get(Host, sandbox.host_id) if sandbox.host_id else None
    if host is not None and host.address:
        client = await hosts.client_of(host)
        await metrics.flush(db, client, sandbox.id, tiers=("24h",))
        try:
            with agent_errors():
                await client.destroy_sandbox(pb.SandboxRef(sandbox_id=wire_id))
        except NotFound:
            pass  # already gone on the host (destroyed, or reaped while it was down)
    await set_status(db, sandbox.id, "stopped", event=StatusEvent(actor, "destroy"))


async def mark_stopped(
    db: Database, sandbox_id: uuid.UUID, *, actor: audit.Actor, reason: str
) -> None:
    """Record a capsule as stopped without its host (which is gone or being removed)."""
    await set_status(
        db, sandbox_id, "stopped", event=StatusEvent(actor, "destroy", {"reason": reason})
    )


async def pause_capsule(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, *, actor: audit.Actor
) -> Sandbox:
    sandbox, client = await _load(db, hosts, team_id, wire_id, "running")
    # The row's time says a pause is under way: the reconciler leaves a capsule the agent
    # reports paused (not by its reaper) to this call until the row is updated.
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(Sandbox).where(Sandbox.id == sandbox.id).values(last_updated=utcnow())
        )
    # A checkpoint that does not fit on the host's disk: the host's 503, not the capsule's 413.
    with agent_errors(exhausted=InsufficientCapacity):
        await client.pause_sandbox(
            pb.SandboxRef(sandbox_id=wire_id), timeout=call_timeouts.PAUSE_TIMEOUT
        )
    paused = await set_status(db, sandbox.id, "paused", event=StatusEvent(actor, "pause"))
    await metrics.flush(db, client, sandbox.id)
    return paused


async def resume_capsule(
    db: Database,
    hosts: Hosts,
    team_id: uuid.UUID,
    wire_id: str,
    *,
    actor: audit.Actor,
    env: Mapping[str, str] | None = None,
) -> Sandbox:
    """Resume a paused capsule; `env` is added to its template's default environment, as at
    its create (E2B's envVars)."""
    # A paused capsule holds no vCPUs or memory: taking them back is checked like a create,
    # and the row says "starting" (which counts) until the agent has answered.
    async with db.sessionmaker() as session, transaction(session, write=True):
        sandbox = await get_capsule(session, team_id, wire_id)
        require_status(sandbox, "paused")
        client = await hosts.client_for(session, sandbox)
        await quotas.check(
            session,
            team_id,
            hosts.limits,
            vcpus=sandbox.vcpus,
            memory_mb=sandbox.memory_mb,
            new_capsule=False,
        )
        host = await session.get(Host, sandbox.host_id)
        assert host is not None  # client_for found it
        await hosts.scheduler.check_room(
            session, host, vcpus=sandbox.vcpus, memory_mb=sandbox.memory_mb
        )
        # Conditional: of resumes arriving together (each read "paused" before taking the
        # team's lock), only the first gets the capsule; the others are refused, not sent on.
        claimed = await session.execute(
            update(Sandbox)
            .where(Sandbox.id == sandbox.id, Sandbox.status == "paused")
            .values(status="starting", last_updated=utcnow())
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidState("capsule is being resumed")
        template = await templates.by_id(session, sandbox.template_id)
    request = pb.ResumeSandboxRequest(
        sandbox_id=wire_id,
        timeout_sec=sandbox.timeout_sec,
        default_user=(template.default_user or "") if template else "",
        default_env={**((template.default_env or {}) if template else {}), **(env or {})},
    )
    try:
        with agent_errors(exhausted=InsufficientCapacity):
            resumed = await client.resume_sandbox(request, timeout=call_timeouts.RESUME_TIMEOUT)
    except BaseException:
        await asyncio.shield(_resume_failed(db, sandbox.id))
        raise
    return await set_status(
        db,
        sandbox.id,
        "running",
        started=True,
        reported=resumed.metadata,
        event=StatusEvent(actor, "resume"),
        routes=hosts.routes,
    )


async def _resume_failed(db: Database, sandbox_id: uuid.UUID) -> None:
    """Give the slot back: the agent keeps a capsule whose resume failed paused."""
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(Sandbox)
            .where(Sandbox.id == sandbox_id, Sandbox.status == "starting")
            .values(status="paused", last_updated=utcnow())
        )


async def ping_capsule(db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str) -> None:
    sandbox, client = await _load(db, hosts, team_id, wire_id, "running")
    with agent_errors():
        await client.ping_sandbox(pb.SandboxRef(sandbox_id=wire_id))
    async with db.sessionmaker() as session, transaction(session, write=True):
        row = await session.get(Sandbox, sandbox.id)
        if row is not None:
            row.last_active_at = utcnow()


async def running_client(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, *, wake: bool = True
) -> AgentClient:
    """The agent of a running capsule of the team, for in-capsule operations (REST exec, files,
    processes, streams). A paused capsule with `auto_resume` is resumed first, as the port
    proxy does (proxy_resume.py: one resume for requests arriving together), audited as the
    platform's: it acts on the capsule's setting, as its reaper does when it pauses it. Calls
    that only look (`wake=False`: listing its ports, which a dashboard polls) do not resume it."""
    route = hosts.routes.get(ids.SANDBOX.parse(wire_id, not_found=True))
    if route is None or route.team_id != team_id:
        route = await _running_route(db, hosts, team_id, wire_id, wake=wake)
        if route is None:
            await proxy_resume.resumed(db, hosts, team_id, wire_id, audit.SYSTEM)
            route = await _running_route(db, hosts, team_id, wire_id, wake=False)
            assert route is not None  # without wake it is a route or an error
    return await hosts.client_of(route.host)


async def _running_route(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, *, wake: bool
) -> capsule_routes.Route | None:
    """The capsule's route if it runs; None if `wake` and it is to be resumed first."""
    read_at = capsule_routes.generation()
    async with db.sessionmaker() as session, transaction(session):
        sandbox = await get_capsule(session, team_id, wire_id)
        if wake and sandbox.auto_resume and sandbox.status in ("paused", "starting"):
            return None
        require_status(sandbox, "running")
        return await hosts.routes.read(session, sandbox, read_at_generation=read_at)
