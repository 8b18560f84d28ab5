"""The issue's rows through the public REST API, each with p50/p95 and its ratio to a baseline
measured in the same run (the machine may be loaded: compare ratios):

- exec round trip: the published `wrenn` SDK's `commands.run("true")` (and plain httpx), against
  the host agent's own Exec over gRPC; back to back, and with 1 s of quiet before each command
  (as an AI agent's commands come);
- create -> first command done, default shape (the warm pool's), through the SDK, against the
  agent's own create + exec;
- create -> first command done, cold (a shape the pool does not hold: restored from the shape's
  boot snapshot), and the first create of a shape on the host (booted), against a bare `runsc run`
  of `true` on the same root filesystem (gVisor's floor), printed beside bare sandboxes that
  start CPython as a capsule starts envd, without and with envd's imports (the floor of a
  capsule whose agent is CPython), and the SDK's own client construction;
- resume -> first command done, through the SDK, against the agent's own resume + exec, and
  a bare `runsc restore` of a sandbox whose CPython imported envd's modules until it runs again
  (gVisor's floor for a resume);
- GET /v1/capsules under 10 and 200 concurrent connections (wrk, with a Lua hook for p95), against
  GET /health at the same concurrency (no credentials, one database ping).

The control plane runs on PostgreSQL (a throwaway cluster this script starts) over a host agent of
its own (or WRENN_BENCH_AGENT).

    sudo uv run python -m bench.api_bench [--iterations N] [--workers N [N ...]] [--listing]

--workers 1 2 runs everything once per process count, each on a control plane of its own over
the same database and agent; --listing measures only the listing (4 capsules in it) and /health.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.controlplane.pgcluster import find_pg_bin, start_cluster
from tests.published_sdk import published_sdk
from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.gvisor import install_envd
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import (
    agent,
    bare_runsc_boots,
    bare_runsc_restores,
    free_port,
    load_note,
    p50,
    report,
    timed,
    timed_async,
    wait_boot_snapshot,
)

SECRET = "bench-secret"
COLD = {"memory_mb": 256}  # a shape the warm pool does not hold
QUIET = 1.0  # seconds before each command of the "after quiet" exec rows
WITH_ENVD = "bare `runsc run` python3 importing envd"
RESTORED = "bare `runsc restore` python3 importing envd"
# wrk prints p50/p75/p90/p99 only; this prints p95 too.
WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("wrenn-p50-us %d\\n", latency:percentile(50)))
  io.write(string.format("wrenn-p95-us %d\\n", latency:percentile(95)))
end
"""


def sdk_create_exec(wrenn: Any, opts: dict[str, str], **shape: int) -> float:
    """Seconds from the create call until its first command is done (not the destroy after)."""
    t = time.perf_counter()
    capsule = wrenn.Capsule(**opts, **shape)
    try:
        capsule.commands.run("true")
        return time.perf_counter() - t
    finally:
        capsule.destroy()


def httpx_create_exec(http: httpx.Client) -> float:
    """sdk_create_exec through a client kept open (the destroy after is not timed)."""
    t = time.perf_counter()
    capsule = http.post("/v1/capsules", json={}).raise_for_status().json()
    try:
        http.post(f"/v1/capsules/{capsule['id']}/exec", json={"cmd": "true"}).raise_for_status()
        return time.perf_counter() - t
    finally:
        http.delete(f"/v1/capsules/{capsule['id']}")


def sdk_resume_exec(capsule: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        capsule.pause()
        t = time.perf_counter()
        capsule.resume()
        capsule.commands.run("true")
        samples.append(time.perf_counter() - t)
    return samples


def envd_floor(rootfs: Path, n: int) -> dict[str, list[float]]:
    """Bare sandboxes that start CPython as a capsule starts envd (`python3 -I -S`), without
    and with envd's imports (envd's package mounted as capsules have it, bytecode compiled):
    what a cold capsule's boot costs before anything of the platform runs."""
    with tempfile.TemporaryDirectory(prefix="wrenn-bench-envd-") as tmp:
        envd = Path(tmp) / "envd"
        install_envd(envd)
        imports = (
            "import sys; sys.path.insert(0, '/opt/wrenn'); import envd.__main__; "
            "from envd import peers, processes, server, sudo"
        )
        interpreter = ["python3", "-I", "-S", "-c", "pass"]
        with_envd = ["python3", "-I", "-S", "-c", imports]
        return {
            "bare `runsc run python3 -I -S -c pass`": bare_runsc_boots(rootfs, n, args=interpreter),
            WITH_ENVD: bare_runsc_boots(rootfs, n, args=with_envd, envd=envd),
        }


def restore_floor(rootfs: Path, n: int) -> list[float]:
    """A bare sandbox's CPython, envd's modules imported, restored from its checkpoint until
    it runs again: what a capsule's resume costs before anything of the platform runs."""
    with tempfile.TemporaryDirectory(prefix="wrenn-bench-envd-") as tmp:
        envd = Path(tmp) / "envd"
        install_envd(envd)
        return bare_runsc_restores(rootfs, n, envd)


async def agent_create_exec(target: str, n: int, gap: float, **shape: int) -> list[float]:
    samples = []
    async with AgentClient(target, SECRET) as c:
        for _ in range(n):
            await asyncio.sleep(gap)  # the pool refills between creates, as for the REST rows
            t = time.perf_counter()
            sb = await c.create_sandbox(pb.CreateSandboxRequest(**shape))
            await c.exec(pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="true"))
            samples.append(time.perf_counter() - t)
            await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    return samples


async def agent_round_trips(target: str, cid: str, n: int, quiet: float = 0.0) -> list[float]:
    async with AgentClient(target, SECRET) as c:
        request = pb.ExecRequest(sandbox_id=cid, cmd="true")
        return await timed_async(lambda: c.exec(request), n, quiet=quiet)


async def agent_resume_exec(target: str, n: int) -> list[float]:
    samples = []
    async with AgentClient(target, SECRET) as c:
        sb = await c.create_sandbox(pb.CreateSandboxRequest())
        ref = pb.SandboxRef(sandbox_id=sb.sandbox_id)
        try:
            for _ in range(n):
                await c.pause_sandbox(ref)
                t = time.perf_counter()
                await c.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sb.sandbox_id))
                await c.exec(pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="true"))
                samples.append(time.perf_counter() - t)
        finally:
            await c.destroy_sandbox(ref)
    return samples


def load(api: str, key: str, path: str, connections: int, seconds: int = 10) -> dict[str, float]:
    """`path` under `connections` concurrent connections, driven by wrk (a Python client at this
    concurrency is slower than the server and would measure itself): requests/s, p50 and p95 in
    seconds, errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        # wrk's own 2 s timeout drops the slow answers from the latencies: a loaded machine's
        # p95 would read as its fastest.
        argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
                "-s", script.name,
                "-H", f"X-API-Key: {key}", f"{api}{path}"]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+(\S+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"Socket errors:.*timeout (\d+)", out)
    found = dict(re.findall(r"^wrenn-(p50|p95)-us (\d+)", out, re.MULTILINE))
    return {
        "rps": float(rate.group(1)) if rate else 0.0,
        "p50": int(found.get("p50", 0)) / 1e6,
        "p95": int(found.get("p95", 0)) / 1e6,
        "errors": (float(errors.group(1)) if errors else 0.0)
        + (float(timeouts.group(1)) if timeouts else 0.0),
    }


def report_load(api: str, key: str, connections: int) -> None:
    floor = load(api, key, "/health", connections)
    listed = load(api, key, "/v1/capsules", connections)
    for name, got in ((f"GET /health, {connections} connections (wrk)", floor),
                      (f"GET /v1/capsules, {connections} connections (wrk)", listed)):  # fmt: skip
        print(
            f"{name:<44} {got['rps']:8.0f} req/s   p50 {got['p50'] * 1000:8.1f} ms   "
            f"p95 {got['p95'] * 1000:8.1f} ms"
            + (f"   {int(got['errors'])} errors" if got["errors"] else ""),
            flush=True,
        )
    if floor["rps"]:
        print(f"{'':<44} list/health throughput {listed['rps'] / floor['rps']:5.2f}x", flush=True)


def signup(api: str) -> str:
    with httpx.Client(base_url=api, timeout=120, trust_env=False) as anon:
        # An account of its own per run (several runs share the database with --workers 1 2).
        email = f"bench-{secrets.token_hex(4)}@wrenn.local"
        body = {"email": email, "password": "bench-password-123", "name": "Bench"}
        token = anon.post("/v1/auth/signup", json=body).raise_for_status().json()["token"]
        key = anon.post(
            "/v1/api-keys", json={"name": "bench"}, headers={"Authorization": f"Bearer {token}"}
        )
        return str(key.raise_for_status().json()["key"])


def run_listing(api: str, key: str, data_dir: Path) -> None:
    with httpx.Client(
        base_url=api, timeout=120, headers={"X-API-Key": key}, trust_env=False
    ) as http:
        try:
            for _ in range(4):
                http.post("/v1/capsules", json=COLD).raise_for_status()
            wait_boot_snapshot(data_dir, COLD["memory_mb"])  # not made while wrk runs
            for connections in (10, 200):
                report_load(api, key, connections)
        finally:
            for item in http.get("/v1/capsules").json():
                if item["status"] != "stopped":
                    http.delete(f"/v1/capsules/{item['id']}")


def run(iterations: int, api: str, target: str, data_dir: Path, listing: bool = False) -> None:
    print(load_note(), flush=True)
    rootfs = data_dir / "templates" / "minimal" / "rootfs"
    key = signup(api)
    if listing:
        return run_listing(api, key, data_dir)
    opts = {"api_key": key, "base_url": api}
    with (
        published_sdk() as wrenn,
        httpx.Client(
            base_url=api, timeout=120, headers={"X-API-Key": key}, trust_env=False
        ) as http,
    ):
        try:
            sdk_create_exec(wrenn, opts)
            sdk_create_exec(wrenn, opts, **COLD)  # warm host caches; boots, and
            wait_boot_snapshot(data_dir, COLD["memory_mb"])  # has the shape's snapshot made
            base = asyncio.run(agent_create_exec(target, iterations, 2.0))
            report("create -> first command, agent gRPC (warm pool)", base)
            rest = []
            for _ in range(iterations):
                time.sleep(2.0)
                rest.append(sdk_create_exec(wrenn, opts))
            report("create -> first command, REST SDK (warm pool)", rest, p50(base))
            # What the SDK does on the client before its first request, alone.
            client = timed(lambda: wrenn.WrennClient(**opts).close(), iterations)
            report("the SDK's client built (WrennClient, no request)", client)
            # The SDK builds a new HTTP client per capsule (its TLS context alone is ~15 ms):
            # the same through one client kept open is the platform's own share.
            kept = []
            for _ in range(iterations):
                time.sleep(2.0)
                kept.append(httpx_create_exec(http))
            report("create -> first command, REST httpx (warm pool)", kept, p50(base))

            bare = bare_runsc_boots(rootfs, iterations)
            report("bare `runsc run true` (gVisor boot floor)", bare)
            floors = envd_floor(rootfs, iterations)
            for name, samples in floors.items():
                report(name, samples, p50(bare))
            cold = [sdk_create_exec(wrenn, opts, **COLD) for _ in range(iterations)]
            report("create -> first command, REST SDK (cold)", cold, p50(bare))
            envd_start = p50(floors[WITH_ENVD])
            print(f"{'':<44} cold / bare python3 importing envd {p50(cold) / envd_start:5.2f}x")
            # The very first create of a shape on a host boots (a shape new to it each time),
            # its snapshot made off the clock. After the row above: it evicts older snapshots.
            first = []
            for n in range(iterations):
                memory_mb = COLD["memory_mb"] + 8 * (n + 1)
                first.append(sdk_create_exec(wrenn, opts, memory_mb=memory_mb))
                wait_boot_snapshot(data_dir, memory_mb)
            report("create -> first command, REST SDK (first of its shape)", first, p50(bare))

            capsule = wrenn.Capsule(**opts)
            cid = capsule.capsule_id
            capsule.commands.run("true")
            direct = asyncio.run(agent_round_trips(target, cid, iterations * 10))
            report("exec round trip, agent gRPC directly", direct)
            via_sdk = timed(lambda: capsule.commands.run("true"), iterations * 10)
            report("exec round trip, REST SDK commands.run", via_sdk, p50(direct))
            via_httpx = timed(
                lambda: http.post(
                    f"/v1/capsules/{cid}/exec", json={"cmd": "true"}
                ).raise_for_status(),
                iterations * 10,
            )
            report("exec round trip, REST httpx", via_httpx, p50(direct))
            # An AI agent's commands come seconds apart, and a sandbox that was quiet runs its
            # next command slower (gVisor's systrap sleeps instead of spinning): the same rows
            # with 1 s of quiet before each command.
            direct = asyncio.run(agent_round_trips(target, cid, iterations, quiet=QUIET))
            report(f"exec after {QUIET:g} s quiet, agent gRPC directly", direct)
            via_sdk = timed(lambda: capsule.commands.run("true"), iterations, quiet=QUIET)
            report(f"exec after {QUIET:g} s quiet, REST SDK commands.run", via_sdk, p50(direct))

            base = asyncio.run(agent_resume_exec(target, iterations))
            report("resume -> first command, agent gRPC", base)
            resumed = sdk_resume_exec(capsule, iterations)
            report("resume -> first command, REST SDK", resumed, p50(base))
            capsule.destroy()
            restored = restore_floor(rootfs, iterations)
            report(RESTORED, restored)
            print(f"{'':<44} resume / bare restore {p50(resumed) / p50(restored):5.2f}x")
            print(f"{'':<44} cold / bare restore {p50(cold) / p50(restored):5.2f}x")

            for _ in range(4):
                http.post("/v1/capsules", json=COLD).raise_for_status()
            wait_boot_snapshot(data_dir, COLD["memory_mb"])  # not made while wrk runs
            if shutil.which("wrk") is None:
                print("GET /v1/capsules: skipped, install wrk (apt-get install wrk)")
            else:
                for connections in (10, 200):
                    report_load(api, key, connections)
        finally:
            # Whatever failed above, no capsule of the benchmark outlives it.
            for item in http.get("/v1/capsules").json():
                if item["status"] != "stopped":
                    http.delete(f"/v1/capsules/{item['id']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="control plane processes (each run)"
    )
    parser.add_argument("--listing", action="store_true", help="only GET /v1/capsules and /health")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    # The pool keeps the default shape only: the cold row's repeated shape is a full boot each
    # time (the pool adapting to it is bench/pool_bench.py's).
    os.environ.setdefault("WRENN_AGENT_POOL_MAX", "0")
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise SystemExit("PostgreSQL is not installed (scripts/install-deps.sh)")
    cluster = start_cluster(pg_bin)
    try:
        url = cluster.create_database("wrenn_bench")
        with agent(args.data_dir, SECRET) as target, tempfile.TemporaryDirectory() as cp_dir:
            for workers in args.workers:
                print(f"-- control plane: {workers} process(es)", flush=True)
                with control_plane(cp_dir, url, target, workers) as api:
                    run(args.iterations, api, target, args.data_dir, listing=args.listing)
    finally:
        cluster.stop()


@contextlib.contextmanager
def control_plane(cp_dir: str, url: str, target: str, workers: int) -> Iterator[str]:
    """`wrenn server --workers N` on the database and the agent; its base URL once it answers."""
    port = free_port()
    env = {
        **os.environ,
        "WRENN_DATABASE_URL": url,
        "WRENN_AGENT_ADDRESS": target,
        "WRENN_AGENT_SECRET": SECRET,
        "WRENN_DEV_MODE": "1",
        "WRENN_LOG_LEVEL": "WARNING",
        # The bench signs up its own account (the product's default is closed).
        "WRENN_SIGNUP": "open",
        # All processes' pools within the cluster's 100 connections (a few left for the rest).
        "WRENN_DATABASE_POOL_SIZE": "10",
        "WRENN_DATABASE_MAX_OVERFLOW": str(max(0, 80 // workers - 10)),
    }
    argv = [sys.executable, "-m", "wrenn_server.cli", "server",
            "--data-dir", cp_dir, "--port", str(port),
            "--workers", str(workers)]  # fmt: skip
    cp = subprocess.Popen(argv, env=env)
    api = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{api}/health", trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield api
    finally:
        cp.terminate()
        cp.wait(30)


if __name__ == "__main__":
    main()
