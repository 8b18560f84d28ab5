"""Engines, sessions and transactions.

`Database` owns one async engine and its session factory. SQLite gets its pragmas on every new
connection (WAL so readers never block the writer, foreign keys enforced, a busy timeout instead of
instant "database is locked") and explicit transaction control: the driver's own implicit BEGIN is
turned off and SQLAlchemy's "begin" event emits `BEGIN`, or `BEGIN IMMEDIATE` for a transaction
opened with `transaction(session, write=True)`. Taking the write lock up front is what makes
busy_timeout work for read-then-write transactions (a deferred one that later upgrades to a writer
fails at once with SQLITE_BUSY instead of waiting).

Services never commit: the caller opens the transaction with `transaction()`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from ...private import open_private, private_dir, private_file

SQLITE_BUSY_TIMEOUT_MS = 10_000
_BEGIN_OPTION = "wrenn_sqlite_begin"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 20,
    max_overflow: int = 30,
    foreign_keys: bool = True,
) -> AsyncEngine:
    """An async engine for `url`, with the SQLite set-up above when it is SQLite; the pool's
    sizes apply to PostgreSQL. `foreign_keys=False` (SQLite, migrations only): a migration that
    recreates a table (copy, drop, rename) must not have the drop cascade into the tables
    referring to it."""
    if not is_sqlite(url):
        # pre_ping: a PostgreSQL restart must not turn the next request of every pooled
        # connection into a 500.
        # A pool big enough that a burst of concurrent requests queues in PostgreSQL, not here
        # (by default; every process has its own, so several must fit max_connections).
        pg = create_async_engine(
            url, echo=echo, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow
        )
        if pg.dialect.driver == "asyncpg":
            _ping_in_one_round_trip(pg)
        return pg
    engine = create_async_engine(url, echo=echo)
    _configure_sqlite(engine, foreign_keys)
    return engine


def _ping_in_one_round_trip(engine: AsyncEngine) -> None:
    """The pool's pre-ping (every checkout of a pooled connection) as one round trip.
    SQLAlchemy's for asyncpg runs its `;` in a transaction it rolls back - BEGIN, `;`, ROLLBACK,
    three round trips - because asyncpg's fetch prepares a statement, which PgBouncer's
    transaction mode could send to another server connection. `execute` without arguments is
    the simple query protocol: one message, no prepared statement, its own transaction.
    A request that creates a capsule checks out three connections."""

    def ping(dbapi_connection: DBAPIConnection) -> bool:
        try:
            # Not `;`: asyncpg fails on the empty query's answer in the simple protocol.
            dbapi_connection.run_async(lambda conn: conn.execute("SELECT 1"))
        except Exception:
            # Taken as a lost connection: the pool drops it and those older, and connects anew.
            return False
        return True

    # This engine's dialect only: each engine has its own.
    engine.dialect.do_ping = ping  # type: ignore[method-assign]


def _configure_sqlite(engine: AsyncEngine, foreign_keys: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # None: the driver emits no BEGIN of its own; the "begin" listener below does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
        # the last transactions.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine and its session factory."""

    def __init__(
        self, url: str, *, echo: bool = False, pool_size: int = 20, max_overflow: int = 30
    ) -> None:
        self.url = url
        if is_sqlite(url):
            path = make_url(url).database
            if path and path != ":memory:":
                _private_sqlite_file(Path(path))
        self.engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=max_overflow)
        # expire_on_commit=False: routes read the objects a service returned after the
        # transaction committed, without another round trip.
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _private_sqlite_file(path: Path) -> None:
    """The database file, made (empty: SQLite takes that as a new database) or tightened to
    0600 before SQLite opens it. SQLite makes its -wal and -shm files with the database file's
    mode, so they are private too; those an older version left are tightened here."""
    if not path.parent.exists():
        private_dir(path.parent)
    os.close(open_private(path, os.O_RDWR))
    for suffix in ("-wal", "-shm", "-journal"):
        private_file(path.with_name(path.name + suffix))


@asynccontextmanager
async def transaction(session: AsyncSession, *, write: bool = False) -> AsyncIterator[None]:
    """Run the block in one transaction: commit on success, roll back on any exception.

    `write=True` marks a transaction that will write; on SQLite it takes the write lock at BEGIN.
    """
    async with session.begin():
        if write:
            options: dict[str, Any] = {_BEGIN_OPTION: "IMMEDIATE"}
            # The first connection() call of the transaction procures the connection with these
            # options, before the "begin" event fires.
            await session.connection(execution_options=options)
        yield
