"""Schema migrations, run programmatically.

`migrate(url)` upgrades a database to the newest revision; it is async so it runs inside the
server's (or a test's) event loop. The Alembic scripts live in `controlplane/migrations/`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from .session import create_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not a main option: the ini parser would choke on '%' in passwords.
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def pending_revisions(current: str | None) -> list[str]:
    """The revisions an upgrade from `current` (None: an empty database) to the newest applies,
    oldest first. Raises UnknownRevision for a revision this version does not have (a newer
    version migrated the database)."""
    scripts = ScriptDirectory.from_config(alembic_config())
    if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
        raise UnknownRevision(current)
    return [s.revision for s in scripts.iterate_revisions("head", current)][::-1]


class UnknownRevision(Exception):
    """The database is at a revision this version's migrations do not know."""

    def __init__(self, revision: str) -> None:
        super().__init__(
            f"the database is at revision {revision}, which this version does not know "
            "(a newer version migrated it): run that version, or restore a backup"
        )
        self.revision = revision


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at (None: never migrated)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
    finally:
        await engine.dispose()


def check_foreign_keys(connection: Connection) -> None:
    """After migrating SQLite (foreign keys unenforced meanwhile, see `create_engine`): what a
    migration left pointing nowhere fails it rather than stay."""
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the migration broke {len(broken)} foreign key(s): {broken[:5]}")


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision` (default: the newest)."""
    engine = create_engine(url, foreign_keys=False)

    def upgrade(connection: Connection) -> None:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
        check_foreign_keys(connection)

    try:
        async with engine.connect() as connection:
            await connection.run_sync(upgrade)
            await connection.commit()
    finally:
        await engine.dispose()


def migrate_blocking(url: str, revision: str = "head") -> None:
    """`migrate` for callers without an event loop (command line)."""
    asyncio.run(migrate(url, revision))
