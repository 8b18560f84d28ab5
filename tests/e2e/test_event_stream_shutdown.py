"""`wrenn server` with an open event stream stops on SIGTERM: the stream ends cleanly (uvicorn
waits for open responses before stopping the application, so the stream must end first)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from ..controlplane.helpers import PASSWORD
from ..server_process import start_server


def test_open_stream_ends_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "WRENN_JWT_SECRET": "events-test-secret-" + "e" * 32,
        "WRENN_AGENT_ADDRESS": "",
        "WRENN_BUILD_WORKERS": "0",
        "WRENN_SIGNUP": "open",
    }
    proc, url, log = start_server(tmp_path, env)
    try:
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
