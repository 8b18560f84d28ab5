"""E2B's lifecycle of a sandbox: its end (`set_timeout`, `refreshes`, a connect), pause and
connect (a paused sandbox is resumed with its envVars), and the leader's `e2b-lifecycle` step
that kills each running sandbox at its end, or pauses it with autoPause."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

from sqlalchemy import select

from .. import ids
from ..db.models.capsules import Sandbox
from ..db.models.e2b import E2bSandbox
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import InvalidState, NotFound
from . import audit, capsules
from .capsules import Hosts
from .e2b_sandboxes import STATE_OF, Reached, Site, find, reached

log = logging.getLogger(__name__)

# How long a connect waits for a resume another call started (a resume takes seconds at most).
RESUME_WAIT_SEC = 60.0


async def set_end(
    db: Database, sandbox: Sandbox, end_at: dt.datetime, *, extend_only: bool, actor: audit.Actor
) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        row = await session.get(E2bSandbox, sandbox.id)
        if row is None:
            row = E2bSandbox(sandbox_id=sandbox.id, end_at=end_at, auto_pause=False, env={})
            session.add(row)
        elif extend_only and row.end_at >= end_at:
            return
        row.end_at = end_at
        await audit.record(
            session,
            actor=actor,
            team_id=sandbox.team_id,
            resource_type="sandbox",
            resource_id=ids.SANDBOX.format(sandbox.id),
            action="update",
            metadata={"e2b_end_at": end_at.isoformat()},
        )


async def set_timeout(
    db: Database, team_id: uuid.UUID, wire_id: str, timeout_sec: int, *, actor: audit.Actor
) -> None:
    """E2B's timeout: the sandbox ends `timeout_sec` from now (sooner or later than before)."""
    sandbox, _ = await find(db, team_id, wire_id)
    end_at = utcnow() + dt.timedelta(seconds=timeout_sec)
    await set_end(db, sandbox, end_at, extend_only=False, actor=actor)


async def refresh(
    db: Database, team_id: uuid.UUID, wire_id: str, duration_sec: int, *, actor: audit.Actor
) -> None:
    """Keep it at least `duration_sec` more (an end further away stays)."""
    sandbox, _ = await find(db, team_id, wire_id)
    end_at = utcnow() + dt.timedelta(seconds=duration_sec)
    await set_end(db, sandbox, end_at, extend_only=True, actor=actor)


async def pause(
    db: Database, hosts: Hosts, team_id: uuid.UUID, wire_id: str, *, actor: audit.Actor
) -> None:
    """Pause a running sandbox; a paused one is E2B's 409."""
    sandbox, _ = await find(db, team_id, wire_id)
    if STATE_OF[sandbox.status] == "paused":
        raise InvalidState("sandbox is already paused")
    await capsules.pause_capsule(db, hosts, team_id, wire_id, actor=actor)


async def connect(
    db: Database,
    hosts: Hosts,
    site: Site,
    team_id: uuid.UUID,
    wire_id: str,
    timeout_sec: int,
    *,
    actor: audit.Actor,
    resume_only: bool = False,
    auto_pause: bool | None = None,
) -> Reached:
    """Reach a sandbox: a paused one is resumed and ends `timeout_sec` from now; a running one
    ends no sooner than that. `resume_only` (E2B's older resume call) refuses a running one."""
    sandbox, row = await find(db, team_id, wire_id)
    end_at = utcnow() + dt.timedelta(seconds=timeout_sec)
    if sandbox.status in ("running", "starting"):
        if resume_only:
            raise InvalidState("sandbox is already running")
        await set_end(db, sandbox, end_at, extend_only=True, actor=actor)
        return reached(site, sandbox)
    try:
        resumed = await capsules.resume_capsule(
            db, hosts, team_id, wire_id, actor=actor, env=row.env if row is not None else None
        )
    except InvalidState:
        # Another call is resuming it: reached once that is done, like a running one (the
        # older resume call still refuses it).
        if resume_only:
            raise
        sandbox = await _resumed_by_another(db, team_id, wire_id)
        await set_end(db, sandbox, end_at, extend_only=True, actor=actor)
        return reached(site, sandbox)
    async with db.sessionmaker() as session, transaction(session, write=True):
        current = await session.get(E2bSandbox, sandbox.id)
        if current is None:
            current = E2bSandbox(sandbox_id=sandbox.id, end_at=end_at, auto_pause=False, env={})
            session.add(current)
        current.end_at = end_at
        if auto_pause is not None:
            current.auto_pause = auto_pause
    return reached(site, resumed, resumed=True)


async def _resumed_by_another(db: Database, team_id: uuid.UUID, wire_id: str) -> Sandbox:
    """The sandbox once another call's resume of it has ended: running, else InvalidState."""
    deadline = asyncio.get_running_loop().time() + RESUME_WAIT_SEC
    while True:
        sandbox, _ = await find(db, team_id, wire_id)
        if sandbox.status == "running":
            return sandbox
        if sandbox.status != "starting" or asyncio.get_running_loop().time() > deadline:
            raise InvalidState(f"sandbox is {sandbox.status}, not running")
        await asyncio.sleep(0.2)


async def expire_due(db: Database, hosts: Hosts, *, now: dt.datetime | None = None) -> int:
    """Kill (or pause, with autoPause) every running sandbox whose E2B end has come; how many
    were. One that cannot be is logged and tried again on the next pass."""
    now = now or utcnow()
    async with db.sessionmaker() as session:
        due = [
            (row.id, row.team_id, row.auto_pause)
            for row in await session.execute(
                select(Sandbox.id, Sandbox.team_id, E2bSandbox.auto_pause)
                .join(E2bSandbox, E2bSandbox.sandbox_id == Sandbox.id)
                .where(E2bSandbox.end_at <= now, Sandbox.status == "running")
            )
        ]
    done = 0
    for sandbox_id, team_id, auto_pause in due:
        wire_id = ids.SANDBOX.format(sandbox_id)
        try:
            if auto_pause:
                await capsules.pause_capsule(db, hosts, team_id, wire_id, actor=audit.SYSTEM)
            else:
                await capsules.destroy_capsule(db, hosts, team_id, wire_id, actor=audit.SYSTEM)
            done += 1
        except (NotFound, InvalidState):
            pass  # ended or changed meanwhile
        except Exception:
            log.exception("ending %s at its E2B timeout failed", wire_id)
    return done
