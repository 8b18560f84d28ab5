"""Shared helpers for the bench scripts: timing statistics and a host agent to measure."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.ports import free_port

__all__ = ["agent", "free_port", "report", "stats"]


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "n": len(ordered)}


def report(
    name: str, samples: list[float], baseline: float | None = None, unit: str = "ms"
) -> None:
    s = stats(samples)
    scale = 1000.0 if unit == "ms" else 1.0
    line = f"{name:<44} p50 {s['p50'] * scale:8.1f} {unit}   p95 {s['p95'] * scale:8.1f} {unit}"
    if baseline:
        line += f"   p50/baseline {s['p50'] / baseline:6.1f}x"
    print(f"{line}   (n={int(s['n'])})", flush=True)


@contextlib.contextmanager
def agent(data_dir: Path, secret: str, subnet: str = "10.202.0.0/16") -> Iterator[str]:
    """Start a host agent process for the benchmark, or use WRENN_BENCH_AGENT=host:port."""
    if os.environ.get("WRENN_BENCH_AGENT"):
        yield os.environ["WRENN_BENCH_AGENT"]
        return
    port = free_port()
    env = {
        **os.environ,
        "WRENN_AGENT_SECRET": secret,
        "WRENN_AGENT_CAPSULE_SUBNET": subnet,
    }
    argv = [sys.executable, "-m", "wrenn_server.cli", "agent", "--data-dir", str(data_dir),
            "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    log = open(data_dir.parent / f"bench-agent-{port}.log", "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
    log.close()
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise SystemExit("agent exited; see its log next to the data dir")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline:
                raise SystemExit("agent did not start")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)
