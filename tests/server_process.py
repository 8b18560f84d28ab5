"""Starting `wrenn server` as its own process for a test, ready when `/health` answers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.ports import free_port

# The app's imports alone take seconds on a loaded 2-core box, more with several workers.
READY_WITHIN_SEC = 180


def start_server(
    data_dir: Path, env: dict[str, str], *args: str, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The process, its base URL (loopback) and its log file; killed if it never gets ready."""
    port = port or free_port()
    log = data_dir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wrenn_server.cli", "server", "--data-dir", str(data_dir),
             "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_WITHIN_SEC
    try:
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{url}/health", trust_env=False).status_code == 200:
                    return proc, url, log
            except httpx.HTTPError:
                time.sleep(0.1)
    except BaseException:
        proc.kill()  # never left running for the tests after this one
        proc.wait()
        raise
