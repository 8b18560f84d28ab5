"""The platform as the README starts it: `wrenn up` in a process of its own on a data dir of its
own (the base template hard-linked from the tests' data dir), ready once it has printed and saved
its credentials."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port
from wrenn_server.hostagent.templates import TemplateStore

SEED = Path(os.environ.get("WRENN_TEST_DATA_DIR", "/var/lib/wrenn-test")) / "templates/minimal"


@dataclass
class Platform:
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def credentials(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.data_dir / "credentials.json").read_text())
        return data


def start(tmp: Path, name: str, workers: int | None = None) -> Platform:
    """`wrenn up` with its default number of control plane processes unless `workers`."""
    data_dir = tmp / name
    if not data_dir.exists():
        (data_dir / "templates").mkdir(parents=True)
        # Hard links: the base template without a minute of debootstrap per instance.
        subprocess.run(["cp", "-al", str(SEED), str(data_dir / "templates/minimal")], check=True)
    port = free_port()
    output = tmp / f"{name}-{port}.out"
    # The product's own signup setting, not the one the other tests run with.
    env = {k: v for k, v in os.environ.items() if k != "WRENN_SIGNUP"}
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wrenn_server.cli", "up", "--data-dir", str(data_dir),
             "--port", str(port), *(["--workers", str(workers)] if workers else [])],
            stdout=out, stderr=subprocess.STDOUT, env={**env, "WRENN_AGENT_POOL_SIZE": "0"},
        )  # fmt: skip
    deadline = time.monotonic() + 180
    while not (data_dir / "credentials.json").exists() or "Ctrl-C" not in output.read_text():
        assert proc.poll() is None, output.read_text()
        assert time.monotonic() < deadline, output.read_text()
        time.sleep(0.2)
    return Platform(data_dir, port, proc, output)


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed worker may wait a while for its reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def control_plane_workers(platform: Platform) -> set[int]:
    """The worker processes of `wrenn up`'s control plane (uvicorn starts them with
    multiprocessing's spawn, beside its resource tracker)."""
    found: set[int] = set()
    for child in children(platform.proc.pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"server" in argv:
            for worker in children(child):
                try:
                    line = Path(f"/proc/{worker}/cmdline").read_bytes()
                except FileNotFoundError:
                    continue
                if b"spawn_main" in line and running(worker):
                    found.add(worker)
    return found


@pytest.fixture
def platforms(tmp_path: Path) -> Iterator[list[Platform]]:
    if not SEED.is_dir():
        # Shared with the integration tests' agent, which would build it the same way.
        store = TemplateStore(SEED.parent)
        asyncio.run(store.ensure_base("minimal", lambda _fraction, _step: None))
    started: list[Platform] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            # Ctrl-C, as a user stops it: killing `wrenn up` alone would leave its agent and
            # control plane running.
            p.proc.send_signal(signal.SIGINT)
            try:
                p.proc.wait(90)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
