"""An in-process cache of who a credential is (API key or user JWT -> Principal).

Resolving a credential costs a database round trip or two on every request; most requests come
from the same few keys. An entry lives `TTL_SEC`, which bounds how long another control plane
process may keep honouring a revoked key, a removed member, a deactivated user or a deleted team
when nothing tells it sooner; on PostgreSQL each process hears of the others' writes to those
tables and may keep an entry longer while it provably has (cache_sync.py: still within a
second of any such write). In this process a committed write to any table a principal is read
from (users, teams, team_members, api_keys) drops every entry at once, so here the change is
seen by the next request. An entry is stored only if no such write committed while it was being
read, so a lookup racing a revocation cannot outlive it.

Only successes are cached: a refused credential is looked up again each time (a new key or a
new membership works at once, and failures are throttled elsewhere).
"""

from __future__ import annotations

import time

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction

from ..db.models import APIKey, Team, TeamMember, User
from . import cache_sync
from .principals import NEUTRAL_WRITE, Principal

# Below one second, so a revocation made through another process is refused within a second
# even when it cannot tell this one (cache_sync.py).
TTL_SEC = 0.5
# A flood of distinct (say, forged-then-valid) credentials cannot grow the cache without bound.
MAX_ENTRIES = 10_000

_AUTH_MODELS = (User, Team, TeamMember, APIKey)
_AUTH_TABLES = frozenset(model.__tablename__ for model in _AUTH_MODELS)
_DIRTY = "wrenn_auth_tables_written"

# Bumped after every commit that wrote an auth table, in any session of this process.
_generation = 0


def generation() -> int:
    return _generation


def _bump() -> None:
    global _generation
    _generation += 1


def drop_all() -> None:
    """Another process wrote what a principal is read from."""
    _bump()


class AuthCache:
    """Credential (a digest or the token) -> Principal, for `ttl` seconds (longer while
    cache_sync says every other process's writes are known)."""

    def __init__(self, *, ttl: float = TTL_SEC, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, int, Principal]] = {}

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        read_at, gen, principal = entry
        if gen != _generation or not cache_sync.trusted(read_at, time.monotonic(), self.ttl):
            self._entries.pop(key, None)
            return None
        return principal

    def put(self, key: str, principal: Principal, *, read_at_generation: int) -> None:
        """Keep `principal`, read while the generation was `read_at_generation`."""
        if self.ttl <= 0 or read_at_generation != _generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), read_at_generation, principal)

    def clear(self) -> None:
        self._entries.clear()

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def bulk_write_table(state: ORMExecuteState) -> str | None:
    """The table a bulk INSERT/UPDATE/DELETE statement writes (they bypass the flush, so the
    caches cannot tell which rows they hit), None for anything else."""
    if not (state.is_update or state.is_delete or state.is_insert):
        return None
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    return name if isinstance(name, str) else None


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    changed = (*session.dirty, *session.deleted)
    if any(isinstance(obj, _AUTH_MODELS) for obj in changed):
        session.info[_DIRTY] = True
        # A new row revokes nothing another process may have kept (only successes are kept).
        cache_sync.notify(session)
    elif any(isinstance(obj, _AUTH_MODELS) for obj in session.new):
        session.info[_DIRTY] = True


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    # Bulk UPDATE/DELETE/INSERT statements bypass the flush.
    if bulk_write_table(state) in _AUTH_TABLES and not state.execution_options.get(NEUTRAL_WRITE):
        state.session.info[_DIRTY] = True
        cache_sync.notify(state.session)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: nothing is committed yet
        return
    if session.info.pop(_DIRTY, False):
        _bump()


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    if previous.nested:  # a savepoint rolled back: the transaction's earlier writes stand
        return
    session.info.pop(_DIRTY, None)
