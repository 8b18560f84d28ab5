"""The migration chain, on both dialects: upgrade to head creates exactly the models' schema."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    migrate,
)
from wrenn_server.controlplane.db.models import Base, Sandbox, Team, TeamMember, Template, User
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.settings import Settings

EXPECTED_TABLES = {
    "users",
    "events",
    "notification_channels",
    "oauth_identities",
    "teams",
    "team_members",
    "api_keys",
    "sandboxes",
    "templates",
    "template_builds",
    "template_build_archives",
    "hosts",
    "host_tags",
    "host_tokens",
    "host_refresh_tokens",
    "leases",
    "team_quotas",
    "user_tokens",
    "invitations",
    "login_throttle",
    "audit_logs",
    "sandbox_metrics",
    "sandbox_metrics_snapshots",
    "e2b_sandboxes",
    "e2b_snapshots",
}


def _schema_diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_upgrade_to_head_creates_every_table(fresh_database_url: str) -> None:
    assert await current_revision(fresh_database_url) is None
    await migrate(fresh_database_url)
    assert await current_revision(fresh_database_url) == head_revision()
    # Running it again is a no-op.
    await migrate(fresh_database_url)

    database = Database(fresh_database_url)
    try:
        async with database.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert tables == EXPECTED_TABLES | {"alembic_version"}
            assert set(Base.metadata.tables) == EXPECTED_TABLES
            # The hand-reviewed migration and the models describe the same schema.
            assert await conn.run_sync(_schema_diff) == []
        async with database.sessionmaker() as session, transaction(session):
            platform = await session.get(Team, ids.PLATFORM_TEAM_ID)
            assert platform is not None and platform.deleted_at is None
    finally:
        await database.dispose()


async def test_foreign_keys_are_enforced(db: Database) -> None:
    async with db.sessionmaker() as session:
        with pytest.raises(IntegrityError):
            async with transaction(session, write=True):
                session.add(TeamMember(team_id=ids.new_id(), user_id=ids.new_id(), role="owner"))
                await session.flush()


async def test_timestamps_round_trip_as_aware_utc(db: Database) -> None:
    moment = dt.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    async with db.sessionmaker() as session:
        async with transaction(session, write=True):
            session.add(User(email="tz@example.com", name="tz", deleted_at=moment))
        async with transaction(session):
            session.expunge_all()
            user = await session.scalar(select(User).where(User.email == "tz@example.com"))
            assert user is not None and user.deleted_at == moment
            assert user.deleted_at.utcoffset() == dt.timedelta(0)
            assert user.created_at.tzinfo is not None
            # Comparisons in SQL use the same UTC representation.
            later = await session.scalar(
                select(User.id).where(User.deleted_at > moment - dt.timedelta(seconds=1))
            )
            assert later == user.id


async def test_sqlite_pragmas(db: Database) -> None:
    if db.dialect != "sqlite":
        return
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() >= 1000


async def test_app_startup_migrates(fresh_database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=fresh_database_url, dev_mode=True, migrate_on_start=True
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert await current_revision(fresh_database_url) == head_revision()


async def test_unfinished_builds_with_an_archive_on_disk_fail_at_the_upgrade(
    fresh_database_url: str,
) -> None:
    """0004 moves archives into the database; one left on a process's disk is not carried over."""
    await migrate(fresh_database_url, "0003")
    database = Database(fresh_database_url)
    rows = {
        "with-archive": ("pending", "/var/lib/wrenn/builds/x.archive"),
        "running-with-archive": ("running", "/var/lib/wrenn/builds/y.archive"),
        "without": ("pending", None),
        "done": ("success", "/var/lib/wrenn/builds/z.archive"),
    }
    try:
        async with database.engine.begin() as conn:
            for name, (status, path) in rows.items():
                await conn.execute(
                    text(
                        "INSERT INTO template_builds (id, name, base_template, recipe, vcpus, "
                        "memory_mb, archive_path, status, logs, default_env) VALUES (:id, :name, "
                        "'minimal', '[]', 1, 512, :path, :status, '[]', '{}')"
                    ),
                    {"id": uuid.uuid4().hex, "name": name, "path": path, "status": status},
                )
        await migrate(fresh_database_url)
        async with database.engine.connect() as conn:
            after = dict(
                (await conn.execute(text("SELECT name, status FROM template_builds"))).all()
            )
    finally:
        await database.dispose()
    assert after == {
        "with-archive": "failed",
        "running-with-archive": "failed",
        "without": "pending",
        "done": "success",
    }


async def test_0007_counts_oauth_emails_as_verified_and_downgrades(
    fresh_database_url: str,
) -> None:
    """0007 adds verified emails: an account whose email an OAuth provider gave it is verified,
    a password account is not (its owner never proved the address). Its downgrade drops what
    it added, and upgrading again works."""
    url = fresh_database_url
    await migrate(url, "0006")
    users = {"pw": uuid.uuid4(), "gh": uuid.uuid4(), "gh-other": uuid.uuid4()}
    database = Database(url)
    try:
        async with database.engine.begin() as conn:
            for name, user_id in users.items():
                await conn.execute(
                    text(
                        "INSERT INTO users (id, email, name, is_admin, is_active, created_at, "
                        "updated_at) VALUES (:id, :email, :name, false, true, CURRENT_TIMESTAMP, "
                        "CURRENT_TIMESTAMP)"
                    ),
                    {"id": user_id.hex, "email": f"{name}@example.com", "name": name},
                )
            for name, email in (("gh", "gh@example.com"), ("gh-other", "else@example.com")):
                await conn.execute(
                    text(
                        "INSERT INTO oauth_identities (id, user_id, provider, provider_user_id, "
                        "email, created_at) VALUES (:id, :user, 'github', :pid, :email, "
                        "CURRENT_TIMESTAMP)"
                    ),
                    {"id": uuid.uuid4().hex, "user": users[name].hex, "pid": name, "email": email},
                )
        await migrate(url, "0007")
        async with database.sessionmaker() as session, transaction(session):
            verified = {
                u.name: (u.email_verified_at is not None, u.token_version)
                for u in await session.scalars(select(User))
            }
        assert verified == {"pw": (False, 0), "gh": (True, 0), "gh-other": (False, 0)}

        def downgrade(connection: Connection) -> None:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0006")

        async with database.engine.connect() as conn:
            await conn.run_sync(downgrade)
            await conn.commit()
        async with database.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            columns = {
                c["name"] for c in await conn.run_sync(lambda c: inspect(c).get_columns("users"))
            }
        assert not {"user_tokens", "invitations", "login_throttle"} & tables
        assert not {"email_verified_at", "token_version"} & columns
        await migrate(url)
        assert await current_revision(url) == head_revision()
    finally:
        await database.dispose()


async def test_0014_makes_template_names_per_team_with_rows_in_place(
    fresh_database_url: str,
) -> None:
    """0014 on a database with templates and capsules: every template gets an id and keeps its
    name as its storage name (its files on the hosts), each capsule the id of its template; a
    second team may then use a name, the same team may not. The downgrade refuses while a
    template is stored under a name of its own, and works once it is gone."""
    url = fresh_database_url
    await migrate(url, "0013")
    team = uuid.uuid4()
    templates = {"minimal": ids.PLATFORM_TEAM_ID, "olive-snap": team}
    capsules = {uuid.uuid4(): "minimal", uuid.uuid4(): "olive-snap", uuid.uuid4(): "deleted"}
    database = Database(url)
    try:
        async with database.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO teams (id, name, slug) VALUES (:id, 'Olive', 'olive-000001')"),
                {"id": team.hex},
            )
            for name, owner in templates.items():
                await conn.execute(
                    text(
                        "INSERT INTO templates (name, team_id, type, size_bytes, default_env, "
                        "metadata) VALUES (:name, :team, 'base', 7, '{}', '{}')"
                    ),
                    {"name": name, "team": owner.hex},
                )
            for capsule_id, template in capsules.items():
                await conn.execute(
                    text(
                        "INSERT INTO sandboxes (id, team_id, template, status, vcpus, memory_mb, "
                        "public_ports, metadata) VALUES (:id, :team, :template, 'paused', 1, 512, "
                        "'[]', '{}')"
                    ),
                    {"id": capsule_id.hex, "team": team.hex, "template": template},
                )
        await migrate(url, "0014")
        async with database.sessionmaker() as session, transaction(session):
            rows = {t.name: t for t in await session.scalars(select(Template))}
            assert {n: (t.team_id, t.storage_name, t.size_bytes) for n, t in rows.items()} == {
                name: (owner, name, 7) for name, owner in templates.items()
            }
            assert len({t.id for t in rows.values()}) == 2
            found = {s.id: s.template_id for s in await session.scalars(select(Sandbox))}
            assert found == {
                capsule_id: rows[name].id if name in rows else None
                for capsule_id, name in capsules.items()
            }
        # Names are per team now; storage names stay unique.
        async with database.sessionmaker() as session:
            async with transaction(session, write=True):
                session.add(
                    Template(
                        name="olive-snap",
                        storage_name="olive-snap.1",
                        team_id=ids.PLATFORM_TEAM_ID,
                        type="snapshot",
                    )
                )
            for clash in (
                Template(name="olive-snap", storage_name="other", team_id=team, type="snapshot"),
                Template(name="fresh", storage_name="minimal", team_id=team, type="snapshot"),
            ):
                with pytest.raises(IntegrityError):
                    async with transaction(session, write=True):
                        session.add(clash)
                session.expunge_all()

        def downgrade(connection: Connection) -> None:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0013")

        async with database.engine.connect() as conn:
            with pytest.raises(RuntimeError, match="stored under a name of their own"):
                await conn.run_sync(downgrade)
            await conn.rollback()
        async with database.engine.begin() as conn:
            await conn.execute(text("DELETE FROM templates WHERE storage_name <> name"))
        async with database.engine.connect() as conn:
            await conn.run_sync(downgrade)
            await conn.commit()
        async with database.engine.connect() as conn:
            names = (await conn.execute(text("SELECT name FROM templates"))).scalars().all()
            columns = {
                c["name"]
                for c in await conn.run_sync(lambda c: inspect(c).get_columns("sandboxes"))
            }
        assert sorted(names) == ["minimal", "olive-snap"] and "template_id" not in columns
        await migrate(url)
        assert await current_revision(url) == head_revision()
    finally:
        await database.dispose()
