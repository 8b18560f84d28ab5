"""Fixtures for the control plane: real databases, the app called in-process.

Every test that takes `client` or `db` runs twice, on SQLite and on PostgreSQL (the `dialect`
fixture is parametrized at session scope, so pytest runs all SQLite cases, then all PostgreSQL
ones). PostgreSQL is a throwaway cluster started once per session (see `pgcluster.py`). Each
dialect's database is migrated once; every test starts from empty tables (on SQLite a copy of
the migrated file of its own).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy.exc import OperationalError

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.api.deps import CurrentPrincipal
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.migrate import migrate
from wrenn_server.controlplane.db.models import Base
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.errors import Conflict
from wrenn_server.controlplane.settings import Settings

from .github_fake import browser, fake_server, github, oauth_app  # noqa: F401 (fixtures)
from .pgcluster import PgCluster

TEST_JWT_SECRET = "test-secret-" + "x" * 40
DIALECTS = ["sqlite", "postgresql"]
STRAY_TASK_GRACE_SEC = 10.0


@pytest.fixture(scope="session", params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _new_database_url(dialect: str, request: pytest.FixtureRequest, tmp: Path) -> str:
    """A URL of a new, empty database of `dialect`."""
    name = f"wrenn_{uuid.uuid4().hex[:12]}"
    if dialect == "sqlite":
        return f"sqlite+aiosqlite:///{tmp / (name + '.db')}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(name)


@pytest.fixture
def fresh_database_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, never-migrated database (for migration tests)."""
    return _new_database_url(dialect, request, tmp_path)


@pytest.fixture(scope="session")
async def migrated_database(
    dialect: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    url = _new_database_url(dialect, request, tmp_path_factory.mktemp(dialect))
    await migrate(url)
    database = Database(url)
    await _empty_tables(database)  # as every test finds it (SQLite's are copies of this file)
    yield database
    await database.dispose()


async def _copy_of(migrated: Database, directory: Path) -> Database:
    """A SQLite database of its own for one test: a copy of the migrated file. Every test
    still on the event loop (the loop is the session's) writes to its own file, so one that
    holds the write lock past its end cannot fail the next test's first write."""
    await migrated.dispose()  # the WAL is checkpointed into the file as the last connection closes
    source = Path(migrated.engine.url.database or "")
    copy = directory / f"{uuid.uuid4().hex[:12]}.db"
    shutil.copyfile(source, copy)
    return Database(f"sqlite+aiosqlite:///{copy}")


async def _empty_tables(database: Database) -> None:
    async with database.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            stmt = table.delete()
            if table.name == "teams":
                # The platform team is part of the schema (the migration creates it).
                stmt = stmt.where(table.c.id != ids.PLATFORM_TEAM_ID)
            await conn.execute(stmt)


@pytest.fixture
async def db(migrated_database: Database, tmp_path: Path) -> AsyncIterator[Database]:
    """The dialect's migrated database, empty: on SQLite a copy of its own, on PostgreSQL the
    session's, its tables emptied for this test."""
    if migrated_database.engine.dialect.name != "sqlite":
        await _empty_tables(migrated_database)
        yield migrated_database
        return
    database = await _copy_of(migrated_database, tmp_path)
    before = asyncio.all_tasks()
    yield database
    await _end_stray_tasks(before)
    await database.dispose()


async def _end_stray_tasks(before: set[asyncio.Task[object]]) -> None:
    """Cancel what the test started and left running (a resume that outlives its caller, the
    cleanup a shield kept going): the session shares one event loop, so it would otherwise
    still use this test's database after it is disposed - a connection returned to a
    disposed pool is never closed, and the garbage collector's warning about it fails
    whichever test runs then."""
    stray = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    for task in stray:
        # Not the loop's closing of a dropped async generator: that is cleanup, let it end.
        if asyncio.iscoroutine(task.get_coro()):
            task.cancel()
    if stray:
        await asyncio.wait(stray, timeout=STRAY_TASK_GRACE_SEC)


@pytest.fixture
def settings(db: Database, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=db.url,
        jwt_secret=TEST_JWT_SECRET,  # type: ignore[arg-type]
        migrate_on_start=False,
    )


probe = APIRouter(prefix="/_test")


@probe.get("/whoami")
async def whoami(principal: CurrentPrincipal) -> dict[str, object]:
    """What `CurrentPrincipal` resolved, for tests of the dependency itself."""
    actor = principal.actor
    return {
        "kind": principal.kind,
        "team_id": ids.TEAM.format(principal.team_id) if principal.team_id else None,
        "role": principal.role,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_name": actor.name,
    }


@probe.get("/boom")
async def boom() -> None:
    raise RuntimeError("internal detail: password=hunter2 at /srv/secret.py")


@probe.get("/locked")
async def locked() -> None:
    raise OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))


@probe.get("/host-busy")
async def host_busy() -> None:
    raise Conflict("host has capsules", sandbox_ids=["sb-1", "sb-2"])


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    application = create_app(settings, db=db)
    application.include_router(probe)
    return application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: a 500 reaches the test as the response the client would see
    # (Starlette re-raises after answering, for the server to log).
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        yield c
