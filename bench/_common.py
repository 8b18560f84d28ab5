"""Shared helpers for the bench scripts: timing statistics and a host agent to measure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from tests.ports import free_port

__all__ = [
    "agent",
    "bare_oci_config",
    "bare_runsc_boots",
    "bare_runsc_restores",
    "free_port",
    "load_note",
    "p50",
    "report",
    "stats",
    "timed",
    "timed_async",
]


def timed(fn: Callable[[], object], n: int, quiet: float = 0.0) -> list[float]:
    """Seconds each of `n` calls of `fn` took (each after `quiet` seconds of nothing)."""
    samples = []
    for _ in range(n):
        if quiet:
            time.sleep(quiet)
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


async def timed_async(
    fn: Callable[[], Awaitable[object]], n: int, quiet: float = 0.0
) -> list[float]:
    samples = []
    for _ in range(n):
        if quiet:
            await asyncio.sleep(quiet)
        t = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t)
    return samples


def load_note() -> str:
    """What else the machine was doing: numbers from a loaded machine are read as ratios."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "n": len(ordered)}


def p50(samples: list[float]) -> float:
    return stats(samples)["p50"]


def report(
    name: str, samples: list[float], baseline: float | None = None, unit: str = "ms"
) -> None:
    s = stats(samples)
    scale = 1000.0 if unit == "ms" else 1.0
    line = f"{name:<44} p50 {s['p50'] * scale:8.1f} {unit}   p95 {s['p95'] * scale:8.1f} {unit}"
    if baseline:
        line += f"   p50/baseline {s['p50'] / baseline:6.1f}x"
    print(f"{line}   (n={int(s['n'])})", flush=True)


def bare_oci_config(rootfs: Path, args: list[str], envd: Path | None = None) -> dict[str, Any]:
    """The OCI config of a bare sandbox running `args` as root on `rootfs` (read-only): its own
    pid, mount and network namespaces and /proc, nothing of a capsule's. `envd`: a directory
    holding the `envd` package, mounted read-only at /opt/wrenn as capsules have it."""
    mounts: list[dict[str, object]] = [{"destination": "/proc", "type": "proc", "source": "proc"}]
    if envd is not None:
        mounts.append({"destination": "/opt/wrenn", "type": "bind", "source": str(envd),
                       "options": ["rbind", "ro"]})  # fmt: skip
    return {
        "ociVersion": "1.0.0",
        "process": {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "env": ["PATH=/usr/bin:/bin"]},
        "root": {"path": str(rootfs), "readonly": True},
        "mounts": mounts,
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}]},
    }  # fmt: skip


def bare_runsc_boots(
    rootfs: Path,
    n: int,
    runsc: str = "runsc",
    args: list[str] | None = None,
    envd: Path | None = None,
) -> list[float]:
    """Seconds for `runsc run` of `args` (default `true`) on `rootfs` (a template's root
    filesystem, read-only, no network) to boot, run and exit: gVisor's own floor for a capsule's
    first command, with none of the platform's work (overlay disk, network, envd, the agent).
    `envd`: a directory holding the `envd` package, mounted read-only at /opt/wrenn as capsules
    have it (so `args` can start CPython on envd's imports)."""
    work = Path(tempfile.mkdtemp(prefix="wrenn-bootbase-"))
    root, bundle = work / "runsc", work / "bundle"
    root.mkdir()
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(bare_oci_config(rootfs, args or ["true"], envd)))
    samples = []
    try:
        for _ in range(n):
            name = f"boot-{uuid.uuid4().hex[:8]}"
            argv = [runsc, f"--root={root}", "--network=none", "--overlay2=none",
                    "--ignore-cgroups", "run", f"--bundle={bundle}", name]  # fmt: skip
            t = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            samples.append(time.perf_counter() - t)
            delete = [runsc, f"--root={root}", "delete", "--force", name]
            subprocess.run(delete, capture_output=True)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return samples


# A process restored from a checkpoint sees the host's wall clock jump past the time it was
# saved at: it exits then, so a foreground `runsc restore` of it returns once it runs again.
_UNTIL_RESTORED = """
import time
last = time.time()
while True:
    time.sleep(0.002)
    now = time.time()
    if now - last > 0.5:
        break
    last = now
"""


def bare_runsc_restores(rootfs: Path, n: int, envd: Path, runsc: str = "runsc") -> list[float]:
    """Seconds for a foreground `runsc restore` of a bare sandbox's checkpoint until its process
    runs again: CPython that imported envd's modules, as a capsule's envd (no network, no disk,
    no agent) - gVisor's own floor for a capsule's resume. One checkpoint, `n` restores."""
    work = Path(tempfile.mkdtemp(prefix="wrenn-restorebase-"))
    root, bundle, image = work / "runsc", work / "bundle", work / "image"
    for d in (root, bundle, image):
        d.mkdir()
    imports = (
        "import sys; sys.path.insert(0, '/opt/wrenn'); import envd.__main__; "
        "from envd import peers, processes, server, sudo"
    )
    args = ["python3", "-I", "-S", "-c", imports + "\n" + _UNTIL_RESTORED]
    (bundle / "config.json").write_text(json.dumps(bare_oci_config(rootfs, args, envd)))
    base = [runsc, f"--root={root}", "--network=none", "--overlay2=none", "--ignore-cgroups"]
    samples = []
    try:
        saved = "saved"
        subprocess.run(
            [*base, "run", "--detach", f"--bundle={bundle}", saved],
            check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # its imports done, its loop running
        subprocess.run(
            [*base, "checkpoint", "--compression=none", f"--image-path={image}", saved],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        subprocess.run([*base, "delete", "--force", saved], capture_output=True)
        for _ in range(n):
            name = f"restore-{uuid.uuid4().hex[:8]}"
            argv = [*base, "restore", f"--image-path={image}", f"--bundle={bundle}", name]
            t = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            samples.append(time.perf_counter() - t)
            subprocess.run([*base, "delete", "--force", name], capture_output=True)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return samples


def wait_boot_snapshot(data_dir: Path, memory_mb: int, timeout: float = 120) -> None:
    """Until the agent on `data_dir` keeps the boot snapshot of the base template's shape with
    `memory_mb` (it makes it in the background after the shape's first create), so that making
    it is off every timed sample."""
    deadline = time.monotonic() + timeout
    while True:
        for shape_file in (data_dir / "boot-snapshots").glob("sb-*/shape.json"):
            with contextlib.suppress(OSError, ValueError):
                shape = json.loads(shape_file.read_text())
                if shape["template"] == "minimal" and shape["memory_mb"] == memory_mb:
                    return
        if time.monotonic() > deadline:
            raise SystemExit(f"no boot snapshot of the {memory_mb} MB shape (agent's log?)")
        time.sleep(0.05)


@contextlib.contextmanager
def agent(data_dir: Path, secret: str, subnet: str = "10.202.0.0/16") -> Iterator[str]:
    """Start a host agent process for the benchmark, or use WRENN_BENCH_AGENT=host:port."""
    if os.environ.get("WRENN_BENCH_AGENT"):
        yield os.environ["WRENN_BENCH_AGENT"]
        return
    # The boot snapshots an earlier run's agent kept: each run starts as a new host would (its
    # rows "first of its shape" boot).
    # (Only the kept ones: files; the agent unmounts and removes a half-made one itself.)
    for kept in (data_dir / "boot-snapshots").glob("sb-*"):
        shutil.rmtree(kept, ignore_errors=True)
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
