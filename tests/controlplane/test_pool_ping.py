"""The PostgreSQL pool's ping on checkout: a pooled connection whose server side ended (a
restart, a terminated backend) is replaced before a request uses it, and the ping is one
statement outside a transaction (no BEGIN and ROLLBACK around it)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text

from wrenn_server.controlplane.db.session import Database

from .pgcluster import PgCluster


async def test_a_connection_ended_server_side_is_replaced_on_checkout(
    pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(pg_cluster.create_database(f"wrenn_{uuid.uuid4().hex[:12]}"), pool_size=1)
    try:
        async with db.engine.connect() as conn:
            ended = await conn.scalar(text("SELECT pg_backend_pid()"))
        pg_cluster.psql(f"SELECT pg_terminate_backend({ended})")

        transactions = 0
        begin = asyncpg.Connection.transaction

        def counted(self: asyncpg.Connection, **kwargs: Any) -> Any:
            nonlocal transactions
            transactions += 1
            return begin(self, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, "transaction", counted)
        async with db.engine.connect() as conn:  # the ping fails: a new connection instead
            assert transactions == 0, "the ping opened a transaction"
            replaced = await conn.scalar(text("SELECT pg_backend_pid()"))
            assert replaced != ended
        async with db.engine.connect() as conn:  # a live pooled connection: the ping passes
            assert transactions == 1  # the SELECT's own, above
            assert await conn.scalar(text("SELECT pg_backend_pid()")) == replaced
    finally:
        await db.dispose()
