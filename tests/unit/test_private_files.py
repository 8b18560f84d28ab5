"""Files the platform keeps for itself are its owner's alone, whatever the umask: the SQLite
database and its WAL, process logs, the data dirs (the whole data dir of `wrenn up`, tried as
another user: tests/e2e/test_up.py)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from wrenn_server.controlplane.db.session import Database
from wrenn_server.private import private_dir, write_private
from wrenn_server.supervisor import Child, Supervisor


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_a_new_sqlite_database_and_its_wal_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data" / "cp"
    path = data / "wrenn.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE secrets (v TEXT)"))
            await conn.execute(text("INSERT INTO secrets VALUES ('token')"))
        async with db.engine.connect() as conn:
            # An open connection in WAL mode keeps -wal and -shm on disk.
            assert (await conn.execute(text("SELECT v FROM secrets"))).scalar() == "token"
            wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
            assert wal.exists() and shm.exists()
            assert {p.name: mode(p) for p in (path, wal, shm)} == {
                "wrenn.db": 0o600,
                "wrenn.db-wal": 0o600,
                "wrenn.db-shm": 0o600,
            }
    finally:
        await db.dispose()
    assert mode(data) == 0o700 and mode(data.parent) == 0o700


async def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "wrenn.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES ('kept')")
    conn.close()
    Path(f"{path}-wal").write_bytes(b"")  # left by an older version, as readable as the rest
    assert mode(path) == 0o644 and mode(Path(f"{path}-wal")) == 0o644
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        assert mode(path) == 0o600 and mode(Path(f"{path}-wal")) == 0o600
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT v FROM t"))).scalar() == "kept"
    finally:
        await db.dispose()
    assert mode(path) == 0o600


def test_process_logs_are_private(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    old = logs / "old.log"
    logs.mkdir()
    old.write_text("from an older version\n")
    supervisor = Supervisor()
    for log_path in (logs / "new.log", old):
        supervisor.start(Child("echo", ["echo", "hi"], {}, log_path, ready=lambda: True))
    supervisor.stop()
    assert mode(logs) == 0o700
    assert mode(logs / "new.log") == 0o600 and mode(old) == 0o600
    assert old.read_text().startswith("from an older version\n")


def test_private_dir_makes_missing_parents_private_and_fixes_existing(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "b")
    assert mode(made) == 0o700 and mode(made.parent) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    private_dir(loose)
    assert mode(loose) == 0o700


def test_write_private_replaces_a_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "template.json"
    target.write_text("{}")
    write_private(target, b'{"name": "x"}')
    assert target.read_bytes() == b'{"name": "x"}' and mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["template.json"]
