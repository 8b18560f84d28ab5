"""An in-process cache of where a capsule runs (capsule id -> team, status, host), for the calls
that reach into a capsule (exec, files, processes, the E2B envd protocol, the port proxy), which
would otherwise read the capsule's and its host's rows on every call.

As in auth_cache.py: an entry lives `TTL_SEC`, which bounds how long another control plane
process's pause, destroy, resume elsewhere or failure may go unseen here when nothing tells this
one sooner (meanwhile the host agent itself refuses a capsule it does not run); on PostgreSQL
each process hears of the others' writes to capsule rows and host routing, and may keep an
entry longer while it provably has (cache_sync.py: still within a second of any such write).
In this process a committed write to a capsule's row drops that capsule's entry at once, and a
committed change to a host's address, certificate or type, a deleted host, or a bulk write to
either table drops every entry; an entry is stored only if no such write committed while it
was being read, so a lookup racing a pause cannot outlive it. Only running capsules are kept:
anything else is read again each time. A create or resume through this process keeps the
capsule's route as it commits (its first command usually follows at once), under the same rule.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
import weakref
from dataclasses import dataclass

from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction

from ..db.models.capsules import Sandbox
from ..db.models.hosts import Host
from ..errors import InvalidState
from . import cache_sync
from .auth_cache import bulk_write_table
from .write_stamp import WriteStamp

# Below one second, as for credentials.
TTL_SEC = 0.5
MAX_ENTRIES = 10_000

# What of a host a route depends on (its heartbeat and status do not move a capsule).
_HOST_ROUTING = ("address", "tls_certificate", "type")
_TABLES = frozenset((Sandbox.__tablename__, Host.__tablename__))
_WRITTEN = "wrenn_capsules_written"  # session.info: ids of capsule rows written
_ALL = "wrenn_capsule_routes_all"  # session.info: a write that may move any capsule
_KEEP = "wrenn_capsule_route_keep"  # session.info: a route to keep once the session commits

# Bumped after every commit that wrote a capsule row or a host's routing, in any session.
_generation = 0
_caches: weakref.WeakSet[CapsuleRoutes] = weakref.WeakSet()
# Shared with the other control plane processes on this machine (see `share_writes`).
_stamp: WriteStamp | None = None


def generation() -> int:
    return _generation


def share_writes(stamp: WriteStamp | None) -> None:
    """Bump `stamp` after each of this process's commits that bumps the generation, so that the
    other processes mapping it see them in `written()`."""
    global _stamp
    _stamp = stamp


def unshare_writes(stamp: WriteStamp) -> None:
    global _stamp
    if _stamp is stamp:
        _stamp = None
    stamp.close()


def written() -> tuple[int, int]:
    """Changes whenever a write to a capsule row or a host's routing commits: in this process, or
    in another on this machine that shares the stamp."""
    return (_generation, _stamp.read() if _stamp is not None else 0)


@dataclass(frozen=True, slots=True)
class Route:
    """A running capsule as its row and its host's row said when it was read. `host` is a
    detached copy: read, never written or refreshed."""

    sandbox_id: uuid.UUID
    team_id: uuid.UUID
    status: str
    auto_resume: bool
    public_ports: tuple[int, ...]
    host: Host
    started_at: dt.datetime | None

    @property
    def generation(self) -> tuple[object, object]:
        """The capsule's host and start time (a pause and resume change it)."""
        return (self.host.id, self.started_at)


class CapsuleRoutes:
    """Capsule id -> `Route`, for `ttl` seconds (longer while cache_sync says every other
    process's writes are known)."""

    def __init__(self, *, ttl: float = TTL_SEC, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[uuid.UUID, tuple[float, Route]] = {}
        _caches.add(self)

    def get(self, sandbox_id: uuid.UUID) -> Route | None:
        entry = self._entries.get(sandbox_id)
        if entry is None:
            return None
        read_at, route = entry
        if not cache_sync.trusted(read_at, time.monotonic(), self.ttl):
            self._entries.pop(sandbox_id, None)
            return None
        return route

    def put(self, sandbox: Sandbox, host: Host, *, read_at_generation: int) -> Route:
        """The route of `sandbox` on `host` (rows read while the generation was
        `read_at_generation`), kept if the capsule is running and nothing moved since."""
        route = Route(
            sandbox_id=sandbox.id,
            team_id=sandbox.team_id,
            status=sandbox.status,
            auto_resume=bool(sandbox.auto_resume),
            public_ports=tuple(sandbox.public_ports or ()),
            host=host,
            started_at=sandbox.started_at,
        )
        if self.ttl <= 0 or read_at_generation != _generation or sandbox.status != "running":
            return route
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[sandbox.id] = (time.monotonic(), route)
        return route

    async def read(
        self, session: AsyncSession, sandbox: Sandbox, *, read_at_generation: int
    ) -> Route:
        """`sandbox`'s route, its host read in `session`; `InvalidState` when the host is
        gone."""
        host = await session.get(Host, sandbox.host_id) if sandbox.host_id else None
        if host is None or not host.address:
            raise InvalidState("the capsule's host is gone")
        return self.put(sandbox, host, read_at_generation=read_at_generation)

    def keep_at_commit(
        self, session: AsyncSession, sandbox: Sandbox, host: Host | None, *, read_at_generation: int
    ) -> None:
        """Keep `sandbox`'s route on `host` (both read in `session`) once the session's
        transaction, which writes the capsule's row (a create or resume making it running),
        commits: its first command usually follows at once and then reads nothing. Kept only
        if the capsule is running as committed and no other write to a capsule or a host's
        routing committed since `read_at_generation` (taken before the rows were read)."""
        if host is not None and host.address:
            session.sync_session.info[_KEEP] = (self, sandbox, host, read_at_generation)

    def forget(self, sandbox_ids: set[uuid.UUID]) -> None:
        for sandbox_id in sandbox_ids:
            self._entries.pop(sandbox_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def drop_all() -> None:
    """Another process wrote a capsule row or a host's routing."""
    global _generation
    _generation += 1
    for cache in list(_caches):
        cache.clear()


def _host_moved(host: Host) -> bool:
    attrs = inspect(host).attrs
    return any(attrs[name].history.has_changes() for name in _HOST_ROUTING)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    written = {obj.id for obj in changed if isinstance(obj, Sandbox) and obj.id is not None}
    session.info.setdefault(_WRITTEN, set()).update(written)
    moved = any(isinstance(obj, Host) for obj in session.deleted) or any(
        isinstance(obj, Host) and _host_moved(obj) for obj in session.dirty
    )
    if moved:
        session.info[_ALL] = True
    # Other processes keep routes of running capsules only: a new row, or one that was not
    # running (a create's or a resume's), cannot be one of their entries.
    if moved or any(
        isinstance(obj, Sandbox) and _was_running(obj) for obj in (*session.dirty, *session.deleted)
    ):
        cache_sync.notify(session)


def _was_running(sandbox: Sandbox) -> bool:
    """Whether the row was running before this flush (or its status was never read here)."""
    history = inspect(sandbox).attrs.status.history
    before = (*history.unchanged, *history.deleted)
    return not before or "running" in before


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    # Bulk UPDATE/DELETE/INSERT statements bypass the flush: which rows they hit is not known.
    if bulk_write_table(state) in _TABLES:
        state.session.info[_ALL] = True
        cache_sync.notify(state.session)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    global _generation
    if session.in_nested_transaction():  # a savepoint released: nothing is committed yet
        return
    before = _generation
    keep: tuple[CapsuleRoutes, Sandbox, Host, int] | None = session.info.pop(_KEEP, None)
    everything = session.info.pop(_ALL, False)
    written: set[uuid.UUID] = session.info.pop(_WRITTEN, set())
    if everything or written:
        _generation += 1
        if _stamp is not None:
            _stamp.bump()
        for cache in list(_caches):
            if everything:
                cache.clear()
            else:
                cache.forget(written)
    if keep is not None:
        cache, sandbox, host, read_at = keep
        if read_at == before:  # only this commit wrote since the rows were read
            cache.put(sandbox, host, read_at_generation=_generation)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    if previous.nested:  # a savepoint rolled back: the transaction's earlier writes stand
        return
    session.info.pop(_ALL, None)
    session.info.pop(_WRITTEN, None)
    session.info.pop(_KEEP, None)
