"""Fixtures for the envd tests: run the real agent as a subprocess and talk HTTP to it.

envd is started exactly like the host agent starts it in a capsule (`python3 -I -S -c ...`),
except that it listens on 127.0.0.1 and a free port and is not pid 1. Set
WRENN_ENVD_TEST_PYTHON to run the suite against another interpreter (e.g. a python3.9).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ports import free_port

SRC = Path(__file__).resolve().parents[3] / "src" / "wrenn_server"
PYTHON = os.environ.get("WRENN_ENVD_TEST_PYTHON", "python3")
LAUNCH = f"import sys; sys.path.insert(0, {str(SRC)!r}); from envd.__main__ import main; main()"


class ProcessStream:
    """Incremental reader of one NDJSON event stream of a process."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-ndjson"
        self.response = response
        self._lines = response.iter_lines()
        self.events: list[dict[str, Any]] = []
        self.stdout = b""
        self.stderr = b""
        self.exit: dict[str, Any] | None = None
        first = self.next_event()
        assert first["type"] == "start", first
        self.pid: int = first["pid"]

    def next_event(self) -> dict[str, Any]:
        line = next(self._lines)
        while not line:
            line = next(self._lines)
        event: dict[str, Any] = json.loads(line)
        self.events.append(event)
        if event["type"] == "stdout":
            self.stdout += base64.b64decode(event["data"])
        elif event["type"] == "stderr":
            self.stderr += base64.b64decode(event["data"])
        elif event["type"] == "exit":
            self.exit = event
        return event

    def wait_for(self, needle: bytes, stream: str = "stdout") -> None:
        """Read events until `needle` has appeared on `stream`."""
        while needle not in getattr(self, stream):
            assert self.exit is None, f"exited before {needle!r}: {self.stdout!r} {self.stderr!r}"
            self.next_event()

    def finish(self) -> dict[str, Any]:
        """Read to the exit event (which must be last) and return it."""
        while self.exit is None:
            self.next_event()
        assert self.events[-1] is self.exit
        assert list(self._lines) == []
        return self.exit


def start_envd(env: dict[str, str], token: bytes, stderr: Any = None) -> subprocess.Popen[bytes]:
    """Start envd the way the host agent does: the token on a pipe as stdin, closed at once."""
    proc = subprocess.Popen(
        [PYTHON, "-I", "-S", "-c", LAUNCH], env=env, stdin=subprocess.PIPE, stderr=stderr
    )
    assert proc.stdin is not None
    proc.stdin.write(token)
    proc.stdin.close()
    return proc


class Envd:
    """A running envd subprocess plus an authenticated client."""

    def __init__(self, stderr_path: Path | None = None) -> None:
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "WRENN_ENVD_BIND": "127.0.0.1",
            "WRENN_ENVD_PORT": str(self.port),
            # Here the client is on loopback, not on a capsule's gateway.
            "WRENN_ENVD_PEERS": "any",
        }
        self._stderr = open(stderr_path, "wb") if stderr_path else None
        self.proc = start_envd(env, self.token.encode(), self._stderr)
        self.client = self.new_client(self.token)
        self._wait_healthy()

    def new_client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, "envd exited during startup"
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "envd did not become healthy"
            time.sleep(0.02)

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self._stderr:
            self._stderr.close()
        return code

    def rss_peak_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    @contextlib.contextmanager
    def start(self, **body: Any) -> Iterator[ProcessStream]:
        """POST /processes and yield the open event stream."""
        with self.client.stream("POST", "/processes", json=body) as response:
            yield ProcessStream(response)

    @contextlib.contextmanager
    def attach(self, pid: int) -> Iterator[ProcessStream]:
        with self.client.stream("GET", f"/processes/{pid}/stream") as response:
            yield ProcessStream(response)

    @staticmethod
    def error(response: httpx.Response) -> tuple[int, str, str]:
        """(status, code, message) of an error response, checking the body shape."""
        body = response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message"}
        return response.status_code, body["error"]["code"], body["error"]["message"]

    def run(self, **body: Any) -> ProcessStream:
        """Run a process to completion and return its finished stream."""
        with self.start(**body) as stream:
            stream.finish()
        return stream


@pytest.fixture(scope="session")
def envd() -> Iterator[Envd]:
    server = Envd()
    yield server
    assert server.stop() == 0


@pytest.fixture
def fresh_envd(tmp_path: Path) -> Iterator[Envd]:
    """A private envd, for tests that change its settings or measure it."""
    server = Envd(stderr_path=tmp_path / "envd.stderr")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def throwaway_user() -> Iterator[str]:
    """A real user (home under /home, one supplementary group), removed afterwards."""
    suffix = secrets.token_hex(4)
    name, group = f"wt{suffix}", f"wtg{suffix}"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-G", group, name], check=True)
    yield name
    subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
    subprocess.run(["groupdel", group], check=False, capture_output=True)
