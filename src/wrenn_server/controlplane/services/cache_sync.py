"""Whether this process has heard of every write, by any control plane process anywhere, to
what its credential and capsule location caches hold - which lets them keep an entry past its
TTL.

Both caches (auth_cache.py, capsule_routes.py) drop what this process's own commits wrote at
once. What other processes write reaches them here, on PostgreSQL: every transaction that writes
a credential's tables, a capsule row or a host's routing also runs `pg_notify(CHANNEL)`
(`notify`; PostgreSQL delivers it at the commit, or never if the transaction rolls back), and
each process LISTENs on a connection of its own (cache_listener.py), where a notification from
another process drops every entry of both caches. Every `HEARTBEAT` seconds the listener sends
a notification of its own on the channel and waits to hear it: PostgreSQL delivers
notifications in the order their transactions committed, so once a heartbeat sent at T is heard,
every such write committed before T is applied here. An entry is then served past its TTL, up
to `MAX_AGE`, while the last heartbeat heard was sent less than `FRESH_WITHIN` ago - a revoked
key is still refused everywhere within a second. With no listener (SQLite, a lost or silent
connection, a pooler that does not pass notifications on, a process starting) entries live their
TTL only.

Writes made outside the control plane (SQL typed by hand) notify no one: they are seen within
`MAX_AGE`.
"""

from __future__ import annotations

import secrets
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

CHANNEL = "wrenn_caches"
HEARTBEAT = 0.5
FRESH_WITHIN = 1.0
MAX_AGE = 30.0
# What this process's notifications carry: its listener skips them (its caches already
# dropped what its own commits wrote, entry by entry).
SENDER = secrets.token_hex(8)

# time.monotonic() when the last heartbeat heard back was sent; None: not listening.
_confirmed: float | None = None


def trusted(read_at: float, now: float, ttl: float) -> bool:
    """Whether an entry read at `read_at` (and not dropped since) may still be served."""
    age = now - read_at
    return age < ttl or (ttl > 0 and age < MAX_AGE and _vouched(now))


def confirmed(sent_at: float) -> None:
    """A heartbeat sent at `sent_at` was heard: every write committed before then is known."""
    global _confirmed
    _confirmed = sent_at


def lost() -> None:
    """The listener is gone: until it is back, entries live their TTL only."""
    global _confirmed
    _confirmed = None


def listening() -> bool:
    return _vouched(time.monotonic())


def _vouched(now: float) -> bool:
    """A heartbeat heard back was sent less than FRESH_WITHIN before `now`."""
    return _confirmed is not None and now - _confirmed < FRESH_WITHIN


def notify(session: Session) -> None:
    """Tell the other processes, at this transaction's commit, that it wrote what their caches
    may hold (PostgreSQL only; on SQLite every process is on this machine and entries live their
    TTL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(select(func.pg_notify(CHANNEL, SENDER)))
