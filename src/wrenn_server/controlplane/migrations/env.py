"""Alembic environment: runs the revision chain on an async engine, batch mode for SQLite.

Two ways in: `db.migrate` hands over an open connection in `config.attributes["connection"]`
(so migrating works inside a running event loop), and the `alembic` command line gives a URL with
`-x url=...` (or WRENN_DATABASE_URL), for which this module makes its own engine.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from wrenn_server.controlplane.db.migrate import check_foreign_keys
from wrenn_server.controlplane.db.models import Base
from wrenn_server.controlplane.db.session import create_engine

config = context.config
target_metadata = Base.metadata


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the portable types as plain SQLAlchemy types, so revisions never import app code
    (a revision must keep meaning the same thing after the models change)."""
    from wrenn_server.controlplane.db.types import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode recreates the table instead.
        render_as_batch=True,
        compare_type=True,
        render_item=_render_item,
        **kwargs,
    )


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or os.environ.get("WRENN_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set WRENN_DATABASE_URL")
    return str(url)


def _run_with(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url(), foreign_keys=False)  # see db/migrate.py
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_with)
            await connection.run_sync(check_foreign_keys)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    # Only on the command line: inside the server, logging belongs to the application.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
