"""REST API benchmark: create -> first exec through REST, exec round trip through REST vs straight
to the host agent (ratio), and GET /v1/capsules throughput and latency under 10 and 200
concurrent connections (driven by wrk), with the control plane on PostgreSQL (a throwaway cluster
this script starts).

    sudo uv run python -m bench.api_bench [--iterations N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.controlplane.pgcluster import find_pg_bin, start_cluster
from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, free_port, report, stats

SECRET = "bench-secret"


async def rest_create_exec(
    http: httpx.AsyncClient, n: int, gap: float, **body: object
) -> list[float]:
    samples = []
    for _ in range(n):
        await asyncio.sleep(gap)
        t = time.perf_counter()
        resp = await http.post("/v1/capsules", json=body)
        resp.raise_for_status()
        cid = resp.json()["id"]
        res = await http.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"})
        res.raise_for_status()
        samples.append(time.perf_counter() - t)
        await http.delete(f"/v1/capsules/{cid}")
    return samples


async def rest_round_trips(http: httpx.AsyncClient, cid: str, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        (await http.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"})).raise_for_status()
        samples.append(time.perf_counter() - t)
    return samples


async def agent_round_trips(target: str, cid: str, n: int) -> list[float]:
    samples = []
    async with AgentClient(target, SECRET) as c:
        for _ in range(n):
            t = time.perf_counter()
            await c.exec(pb.ExecRequest(sandbox_id=cid, cmd="true"))
            samples.append(time.perf_counter() - t)
    return samples


def list_load(api: str, key: str, connections: int, seconds: int = 10) -> str:
    """GET /v1/capsules under `connections` concurrent connections, driven by wrk: a Python client
    at this concurrency is slower than the server and would measure itself."""
    if shutil.which("wrk") is None:
        return "skipped: install wrk (apt-get install wrk) to measure it"
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
            "-H", f"X-API-Key: {key}", f"{api}/v1/capsules"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"^\s*(50%|99%|Requests/sec:)\s+(\S+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (
        f"{found.get('Requests/sec:', '?')} requests/s, p50 {found.get('50%', '?')}, "
        f"p99 {found.get('99%', '?')}" + (f", {errors.group(1)} errors" if errors else "")
    )


async def run(iterations: int, api: str, target: str) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=120, trust_env=False) as anon:
        body = {"email": "bench@wrenn.local", "password": "bench-password-123", "name": "Bench"}
        token = (await anon.post("/v1/auth/signup", json=body)).json()["token"]
        key = await anon.post(
            "/v1/api-keys", json={"name": "bench"}, headers={"Authorization": f"Bearer {token}"}
        )
        headers = {"X-API-Key": key.json()["key"]}
    async with httpx.AsyncClient(
        base_url=api, timeout=120, headers=headers, trust_env=False
    ) as http:
        try:
            await rest_create_exec(http, 2, 0, memory_mb=256)
            report(
                "REST create -> first exec (cold boot)",
                await rest_create_exec(http, iterations, 0, memory_mb=256),
            )
            report(
                "REST create -> first exec (warm pool)",
                await rest_create_exec(http, iterations, 2.0),
            )
            cid = (await http.post("/v1/capsules", json={})).json()["id"]
            await rest_round_trips(http, cid, 5)
            direct = await agent_round_trips(target, cid, iterations * 5)
            via_rest = await rest_round_trips(http, cid, iterations * 5)
            report("exec round trip, agent gRPC directly", direct)
            report("exec round trip, REST", via_rest, baseline=stats(direct)["p50"])
            for _ in range(4):
                await http.post("/v1/capsules", json={"memory_mb": 256})
            for connections in (10, 200):
                load = await asyncio.to_thread(list_load, api, headers["X-API-Key"], connections)
                print(f"GET /v1/capsules, {connections} connections (PostgreSQL): {load}")
        finally:
            # Whatever failed above, no capsule of the benchmark outlives it.
            for item in (await http.get("/v1/capsules")).json():
                if item["status"] != "stopped":
                    await http.delete(f"/v1/capsules/{item['id']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="control plane processes")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise SystemExit("PostgreSQL is not installed (scripts/install-deps.sh)")
    cluster = start_cluster(pg_bin)
    cp = None
    try:
        url = cluster.create_database("wrenn_bench")
        with agent(args.data_dir, SECRET) as target, tempfile.TemporaryDirectory() as cp_dir:
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
            }
            argv = [sys.executable, "-m", "wrenn_server.cli", "server",
                    "--data-dir", cp_dir, "--port", str(port),
                    "--workers", str(args.workers)]  # fmt: skip
            cp = subprocess.Popen(argv, env=env)
            api = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{api}/health", trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            asyncio.run(run(args.iterations, api, target))
    finally:
        if cp is not None:
            cp.terminate()
            cp.wait(30)
        cluster.stop()


if __name__ == "__main__":
    main()
