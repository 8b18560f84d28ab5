"""`wrenn server` with an open event stream stops on SIGTERM: the stream ends cleanly (uvicorn
waits for open responses before stopping the application, so the stream must end first)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.ports import free_port

from ..controlplane.helpers import PASSWORD


def test_open_stream_ends_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "WRENN_JWT_SECRET": "events-test-secret-" + "e" * 32,
        "WRENN_AGENT_ADDRESS": "",
        "WRENN_BUILD_WORKERS": "0",
        "WRENN_SIGNUP": "open",
    }
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wrenn_server.cli", "server", "--data-dir", str(tmp_path),
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        resp = httpx.post(
            f"{url}/v1/auth/signup",
            json={"email": "ev@example.com", "password": PASSWORD, "name": "Ev"},
        )
        assert resp.status_code == 201, resp.text
        headers = {"Authorization": f"Bearer {resp.json()['token']}"}
        with httpx.stream("GET", f"{url}/v1/events/stream", headers=headers, timeout=20) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines) == "event: connected"
            proc.send_signal(signal.SIGTERM)
            # The rest of the stream arrives and it ends; a hang would hit the read timeout.
            rest = list(lines)
            assert all(line == "" or line.startswith(("data:", ":")) for line in rest), rest
        # uvicorn re-raises the signal it stopped on once it has finished.
        assert proc.wait(30) in (0, -signal.SIGTERM), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
