"""`wrenn server --workers 2`: two processes serve one port on one database; exactly one of them
runs the background loops, and another takes over when it dies."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.waiting import wait_until

from ..controlplane.helpers import PASSWORD
from ..server_process import start_server

LEASE_TTL_SEC = 15  # wrenn_server.controlplane.jobs.leadership.TTL_SEC


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    env = {
        **os.environ,
        "WRENN_JWT_SECRET": "workers-test-secret-" + "w" * 32,
        "WRENN_AGENT_ADDRESS": "",
        "WRENN_RECONCILE_INTERVAL_SEC": "0.5",
        "WRENN_BUILD_WORKERS": "0",
        # Sign-in locks long enough that none runs out while a test looks at them.
        "WRENN_LOGIN_LOCKOUT_FIRST_SEC": "60",
    }
    proc, url, log = start_server(tmp_path, env, "--workers", "2")
    yield proc, url, tmp_path / "wrenn.db"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the server did not stop on SIGTERM: " + log.read_text())


def _workers(parent: int) -> set[int]:
    """uvicorn's worker processes (children of the server, beside multiprocessing's tracker)."""
    out = subprocess.run(
        ["pgrep", "-P", str(parent), "-f", "spawn_main"], capture_output=True, text=True
    ).stdout
    return {int(pid) for pid in out.split()}


def _lease_holder_pid(db: Path) -> int | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT holder FROM leases WHERE name = 'background' AND expires_at > ?",
            (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),),
        ).fetchone()
    return int(row[0].split(":")[1]) if row and row[0] else None


def test_two_workers_share_the_api_and_one_leads(
    server: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    proc, url, db = server
    workers = wait_until(
        lambda: len(_workers(proc.pid)) == 2 and _workers(proc.pid), 30, what="2 workers"
    )
    assert isinstance(workers, set)

    # The API works through whichever process accepts each connection.
    signup = httpx.post(
        f"{url}/v1/auth/signup",
        json={"email": "w@example.com", "password": PASSWORD, "name": "W"},
    )
    assert signup.status_code == 201, signup.text
    headers = {"Authorization": f"Bearer {signup.json()['token']}"}
    for _ in range(20):
        with httpx.Client(base_url=url) as fresh:  # a new connection each time
            assert fresh.get("/v1/capsules", headers=headers).status_code == 200

    leader = wait_until(lambda: _lease_holder_pid(db), 20, what="a leader")
    assert leader in workers
    os.kill(leader, signal.SIGKILL)
    # The other worker (or the one uvicorn starts in its place) takes over once the lease lapses.
    successor = wait_until(
        lambda: (pid := _lease_holder_pid(db)) not in (None, leader) and pid,
        LEASE_TTL_SEC + 15,
        what="a new leader",
    )
    assert successor in _workers(proc.pid)
    # uvicorn starts a worker in place of the killed one: the fixture's SIGTERM comes once it
    # is up, not while it starts (a full-suite run timed out stopping the server then).
    wait_until(lambda: len(_workers(proc.pid)) == 2, 60, what="the killed worker replaced")


def test_sign_in_throttling_holds_across_workers(
    server: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    """Failed sign-ins are counted in the database: guesses spread over both processes add up,
    and the lock holds whichever process answers next."""
    proc, url, _db = server
    wait_until(lambda: len(_workers(proc.pid)) == 2, 30, what="2 workers")
    signup = httpx.post(
        f"{url}/v1/auth/signup",
        json={"email": "w@example.com", "password": PASSWORD, "name": "W"},
    )
    assert signup.status_code == 201, signup.text

    def attempt(password: str) -> httpx.Response:
        with httpx.Client(base_url=url) as fresh:  # a new connection: either process
            return fresh.post(
                "/v1/auth/login", json={"email": "w@example.com", "password": password}
            )

    assert [attempt(f"guess {i}").status_code for i in range(5)] == [401] * 5
    for _ in range(10):
        right = attempt(PASSWORD)
        assert right.status_code == 429, right.text
        assert 0 < int(right.headers["retry-after"]) <= 60
