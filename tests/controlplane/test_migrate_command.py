"""`wrenn migrate`, run as operators run it (its own process): on a database an older version
made (revision 0010) and filled, `--check` says what is pending and exits 1, the upgrade says
from and to which revision, and every row is still there; then `--check` exits 0. A database
a newer version migrated is refused, changed in nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import op
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from wrenn_server.controlplane.db.migrate import (
    check_foreign_keys,
    current_revision,
    head_revision,
    migrate,
    pending_revisions,
)
from wrenn_server.controlplane.db.session import Database, create_engine

TEAM, USER, CAPSULE = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def _wrenn_migrate(url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WRENN_DATABASE_URL": url, "WRENN_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "wrenn_server.cli", "migrate", "--data-dir", str(data_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _fill(database: Database) -> None:
    """What a box running the 0010 version holds: an account, its team, a snapshot template
    and a paused capsule made from it (raw SQL: the models are the newest schema)."""
    async with database.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO users (id, email, name, is_admin, is_active, created_at, updated_at)"
                " VALUES (:id, 'old@example.com', 'Old', false, true, CURRENT_TIMESTAMP,"
                " CURRENT_TIMESTAMP)"
            ),
            {"id": USER.hex},
        )
        await conn.execute(
            text("INSERT INTO teams (id, name, slug) VALUES (:id, 'Old team', 'old-team-0001')"),
            {"id": TEAM.hex},
        )
        await conn.execute(
            text(
                "INSERT INTO team_members (team_id, user_id, role, is_default)"
                " VALUES (:team, :user, 'owner', true)"
            ),
            {"team": TEAM.hex, "user": USER.hex},
        )
        await conn.execute(
            text(
                "INSERT INTO templates (name, team_id, type, vcpus, memory_mb, size_bytes,"
                " default_env) VALUES ('old-snap', :team, 'snapshot', 1, 512, 4096, '{}')"
            ),
            {"team": TEAM.hex},
        )
        await conn.execute(
            text(
                "INSERT INTO sandboxes (id, team_id, template, status, vcpus, memory_mb)"
                " VALUES (:id, :team, 'old-snap', 'paused', 1, 512)"
            ),
            {"id": CAPSULE.hex, "team": TEAM.hex},
        )


async def _rows(database: Database) -> dict[str, object]:
    async with database.engine.connect() as conn:

        async def one(sql: str) -> object:
            return tuple((await conn.execute(text(sql))).one())

        return {
            "user": await one("SELECT email, name, is_active FROM users"),
            "team": await one("SELECT name, slug FROM teams WHERE slug = 'old-team-0001'"),
            "member": await one("SELECT role, is_default FROM team_members"),
            "template": await one(
                "SELECT name, type, size_bytes FROM templates WHERE name = 'old-snap'"
            ),
            "capsule": await one("SELECT template, status, vcpus, memory_mb FROM sandboxes"),
        }


async def test_migrate_upgrades_an_older_database_keeping_its_rows(
    fresh_database_url: str, tmp_path: Path
) -> None:
    url = fresh_database_url
    await migrate(url, "0010")
    database = Database(url)
    try:
        await _fill(database)
        before = await _rows(database)
        pending = pending_revisions("0010")
        assert pending[0] == "0011" and pending[-1] == head_revision()

        check = _wrenn_migrate(url, tmp_path, "--check")
        assert check.returncode == 1, check.stderr
        assert f"database at 0010: {len(pending)} pending ({', '.join(pending)})" in check.stdout
        assert await current_revision(url) == "0010"  # --check changed nothing

        upgrade = _wrenn_migrate(url, tmp_path)
        assert upgrade.returncode == 0, upgrade.stderr
        assert f"migrating from 0010 to {head_revision()}" in upgrade.stdout
        assert f"database at {head_revision()}: up to date" in upgrade.stdout
        assert await current_revision(url) == head_revision()
        assert await _rows(database) == before

        again = _wrenn_migrate(url, tmp_path, "--check")
        assert again.returncode == 0, again.stderr
        assert f"database at {head_revision()}: up to date" in again.stdout
    finally:
        await database.dispose()


async def test_migrate_refuses_a_database_of_a_newer_version(
    fresh_database_url: str, tmp_path: Path
) -> None:
    url = fresh_database_url
    await migrate(url)
    database = Database(url)
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        for args in ((), ("--check",)):
            refused = _wrenn_migrate(url, tmp_path, *args)
            assert refused.returncode == 1
            assert "revision 9999, which this version does not know" in refused.stderr
        assert await current_revision(url) == "9999"
    finally:
        await database.dispose()


async def test_migrate_makes_an_empty_database(fresh_database_url: str, tmp_path: Path) -> None:
    check = _wrenn_migrate(fresh_database_url, tmp_path, "--check")
    assert check.returncode == 1 and "database at none (empty database)" in check.stdout
    made = _wrenn_migrate(fresh_database_url, tmp_path)
    assert made.returncode == 0, made.stderr
    assert await current_revision(fresh_database_url) == head_revision()


async def test_a_migration_recreating_a_table_drops_nothing_referring_to_it(
    fresh_database_url: str,
) -> None:
    """SQLite: a batch migration that recreates `teams` (copy, drop, rename, as Alembic does
    for a change ALTER TABLE cannot make) must not cascade the drop into team_members; a
    migration leaving a row pointing nowhere fails instead."""
    url = fresh_database_url
    if not url.startswith("sqlite"):
        pytest.skip("PostgreSQL alters tables in place")
    await migrate(url, "0010")
    database = Database(url)
    try:
        await _fill(database)
        before = await _rows(database)
    finally:
        await database.dispose()
    engine = create_engine(url, foreign_keys=False)
    try:
        async with engine.connect() as conn:

            def recreate(sync: Connection) -> None:
                context = MigrationContext.configure(sync)
                with (
                    Operations.context(context),
                    op.batch_alter_table("teams", recreate="always") as batch,
                ):
                    batch.add_column(sa.Column("extra", sa.Integer(), nullable=True))
                check_foreign_keys(sync)

            await conn.run_sync(recreate)
            await conn.commit()
            await conn.execute(text("DELETE FROM teams"))
            with pytest.raises(RuntimeError, match="broke"):
                await conn.run_sync(check_foreign_keys)
            await conn.rollback()
    finally:
        await engine.dispose()
    database = Database(url)
    try:
        assert await _rows(database) == before
    finally:
        await database.dispose()
