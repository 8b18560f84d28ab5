"""Lifecycle events for the live stream: written from the audit records of capsule, snapshot,
template build and (a team's own) host changes, in the same transaction (so an event exists
exactly when its change committed), read back in id order, purged by age.

The payload is the published SDK's `SSEEvent`: `event` (its kind, e.g. `capsule.create`),
`outcome`, `resource` {id, type}, `actor` {type, id, name}, `metadata` (strings only), `error`,
`sandbox` (the capsule as the API shows it, for capsule events) and `timestamp`.

Writing an event also wakes the event hubs: on PostgreSQL the transaction NOTIFYs (delivered at
commit, dropped with a rollback); in every case the hooks `on_commit` registered for the engine
run after the commit (this process's own hub, and the Redis publisher). A wake-up names the
engine that sent it (`sender_of`): the hub of that engine, already woken by its hook, skips it
rather than read the table twice per commit.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from .. import ids
from ..db.models import Event, Sandbox
from ..schemas.capsules import Capsule

if TYPE_CHECKING:
    from ..db.models import AuditLog

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "wrenn_events"
_WROTE = "wrenn_events_written"

# (audit resource type, action) -> (event kind, new status of the resource or None).
_KINDS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("sandbox", "create"): ("capsule.create", "running"),
    ("sandbox", "pause"): ("capsule.pause", "paused"),
    ("sandbox", "auto_pause"): ("capsule.pause", "paused"),
    ("sandbox", "resume"): ("capsule.resume", "running"),
    ("sandbox", "destroy"): ("capsule.destroy", "stopped"),
    ("sandbox", "stopped"): ("capsule.destroy", "stopped"),
    ("sandbox", "marked_missing"): ("capsule.state.changed", "missing"),
    ("sandbox", "died"): ("capsule.state.changed", "error"),
    ("snapshot", "create"): ("template.snapshot.create", None),
    ("snapshot", "delete"): ("template.snapshot.delete", None),
    ("template", "build_submit"): ("template.build.create", "pending"),
    ("template", "build_start"): ("template.build.start", "running"),
    ("template", "build"): ("template.build.finish", None),
    ("template", "build_cancel"): ("template.build.cancel", "cancelled"),
    ("host", "register"): ("host.up", "online"),
    ("host", "marked_up"): ("host.up", "online"),
    ("host", "marked_down"): ("host.down", "unreachable"),
    ("host", "delete"): ("host.down", "removed"),
}
_RESOURCE_TYPES = {
    "sandbox": "sandbox",
    "snapshot": "template",
    "template": "build",
    "host": "host",
}
# The SDK's contract: these kinds carry no outcome (state changes, not actions).
_NO_OUTCOME = {"capsule.state.changed", "host.up", "host.down"}

# Every kind a stream may carry; the published SDK (0.3.0) parses only CONTRACT_KINDS and fails on
# any other, so streams carry the others only when asked for them.
KINDS: frozenset[str] = frozenset(kind for kind, _ in _KINDS.values())
CONTRACT_KINDS: frozenset[str] = KINDS - {k for k in KINDS if k.startswith("template.build.")}


def payload_of(entry: AuditLog) -> dict[str, Any] | None:
    """The stream's message for an audit record, or None if the record is no lifecycle event."""
    found = _KINDS.get((entry.resource_type, entry.action))
    if found is None:
        return None
    kind, status = found
    source = {k: str(v) for k, v in (entry.metadata_ or {}).items() if v is not None}
    resource_id = entry.resource_id
    error: str | None = None
    if entry.resource_type == "template":
        # A build is its own resource; the template it makes is named in the metadata.
        resource_id = source.pop("build_id", None)
        error = source.pop("error", None)
        source = {"template": entry.resource_id or "", **source}
        status = status or source.get("status")
    metadata = source
    if entry.action not in ("create", "delete") or entry.resource_type == "sandbox":
        metadata["action"] = entry.action
    if status is not None:
        metadata["to"] = status
    body: dict[str, Any] = {
        "event": kind,
        "resource": {"id": resource_id, "type": _RESOURCE_TYPES[entry.resource_type]},
        "actor": {"type": entry.actor_type, "id": entry.actor_id, "name": entry.actor_name},
        "metadata": metadata,
        "sandbox": None,
        "timestamp": (entry.created_at or dt.datetime.now(dt.UTC)).isoformat(),
    }
    # Actions succeeded (failures record nothing), except a build, which may end in failure.
    if kind == "template.build.finish" and status != "success":
        body["outcome"] = "error"
        body["error"] = error or f"the build ended {status}"
    elif kind not in _NO_OUTCOME:
        body["outcome"] = "success"
    return body


async def _capsule(session: AsyncSession, wire_id: str | None) -> dict[str, Any] | None:
    """The capsule as the API shows it (already in the session: the change just made it)."""
    if wire_id is None:
        return None
    try:
        sandbox = await session.get(Sandbox, ids.SANDBOX.parse(wire_id))
        return None if sandbox is None else Capsule.of(sandbox).model_dump(mode="json")
    except Exception:  # the SDK's contract: null if the lookup failed
        log.exception("capsule %s of an event not read", wire_id)
        return None


async def record_from_audit(
    session: AsyncSession, entry: AuditLog, *, team_id: uuid.UUID | None = None
) -> Event | None:
    """Add the event of an audit record to the caller's transaction (if it is one), on the
    stream of the record's team, or of `team_id` for a record of no team (a platform-wide
    build, on the stream of the team it was submitted from)."""
    payload = payload_of(entry)
    team = entry.team_id or team_id
    if payload is None or team is None:
        return None
    if entry.resource_type == "sandbox":
        payload["sandbox"] = await _capsule(session, entry.resource_id)
    event = Event(team_id=team, kind=payload["event"], payload=payload)
    session.add(event)
    await session.flush()
    session.info[_WROTE] = True
    if session.get_bind().dialect.name == "postgresql":
        # Delivered to the listeners at commit, never for a rolled-back change.
        await session.execute(
            text("SELECT pg_notify(:channel, :sender)"),
            {"channel": NOTIFY_CHANNEL, "sender": sender_of(_engine(session))},
        )
    return event


# After-commit hooks, per engine (so two applications in one process keep apart).
_hooks: weakref.WeakKeyDictionary[Engine, list[Callable[[], None]]] = weakref.WeakKeyDictionary()
# Each engine's name on the wake-ups it causes (random: unique across processes).
_senders: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def sender_of(engine: AsyncEngine | Engine) -> str:
    """The name the wake-ups of `engine`'s commits carry."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    return _senders.setdefault(sync, secrets.token_hex(8))


def _engine(session: AsyncSession | Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def on_commit(engine: AsyncEngine, hook: Callable[[], None]) -> Callable[[], None]:
    """Run `hook` (on the event loop, quickly) after each commit on `engine` that wrote events;
    returns the function that removes it."""
    hooks = _hooks.setdefault(engine.sync_engine, [])
    hooks.append(hook)

    def remove() -> None:
        if hook in hooks:
            hooks.remove(hook)

    return remove


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: the outer one may still fail
        return
    if not session.info.pop(_WROTE, False):
        return
    for hook in list(_hooks.get(_engine(session), ())):
        try:
            hook()
        except Exception:
            log.exception("event commit hook failed")


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_WROTE, None)


async def team_of_build(session: AsyncSession, build_wire_id: str) -> uuid.UUID | None:
    """The team a build was submitted from: that of its first event (None once purged)."""
    team: uuid.UUID | None = await session.scalar(
        select(Event.team_id)
        .where(
            Event.kind == "template.build.create",
            Event.payload["resource"]["id"].as_string() == build_wire_id,
        )
        .order_by(Event.id.desc())
        .limit(1)
    )
    return team


async def latest_id(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.max(Event.id))) or 0)


async def after(
    session: AsyncSession,
    after_id: int,
    *,
    team_id: uuid.UUID | None = None,
    up_to: int | None = None,
    limit: int = 500,
) -> Sequence[Event]:
    """Events with an id above `after_id` (and at most `up_to`), oldest first."""
    query = select(Event).where(Event.id > after_id).order_by(Event.id).limit(limit)
    if team_id is not None:
        query = query.where(Event.team_id == team_id)
    if up_to is not None:
        query = query.where(Event.id <= up_to)
    return (await session.scalars(query)).all()


async def purge(session: AsyncSession, *, before: dt.datetime) -> int:
    """Forget events older than `before` (the stream's resume window)."""
    result = await session.execute(delete(Event).where(Event.created_at < before))
    return int(getattr(result, "rowcount", 0) or 0)
