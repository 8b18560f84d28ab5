"""E2B path vs Wrenn's REST path, on the same server and capsules: create -> first command, a
command's round trip, and a 100 MB file written and read back, each through the stock `e2b` SDK
(E2B's control API and in-sandbox protocol, served by the control plane) and through Wrenn's REST
API (httpx). A command's round trip is also measured on the host agent's own Exec over gRPC, the
baseline of both paths' ratios: of `true` (`sh -c`) and of what the SDK sends (`bash -l -c`),
every path interleaved per round. The control plane runs as `wrenn server` (SQLite) over a host
agent of its own.

    sudo uv run python -m bench.e2b_bench [--iterations N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from e2b import Sandbox

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, free_port, load_note, p50, report, timed

SECRET = "bench-secret"
BIG = 100 * 1024 * 1024
FILE = "/home/wrenn-user/big.bin"


def gap(seconds: float, fn: Callable[[], float]) -> float:
    time.sleep(seconds)
    return fn()


# What the `e2b` SDK's `commands.run("true")` asks envd to run: a login bash.
E2B_ARGV = ["/bin/bash", "-l", "-c", "true"]


def exec_rows(http: httpx.Client, api: str, target: str, sbx: Sandbox, n: int) -> None:
    """A command's round trip on every path, interleaved (one of each per round) so the
    machine's load falls on all of them alike: the agent's own Exec of `true` (sh -c) and of
    the SDK's login bash, REST with either, E2B's protocol by plain httpx (one Connect server
    stream) and by the SDK."""
    cid = sbx.sandbox_id
    loop = asyncio.new_event_loop()

    async def open_client() -> AgentClient:
        return AgentClient(target, SECRET)  # its channel belongs to the loop it is made in

    client = loop.run_until_complete(open_client())
    sh = pb.ExecRequest(sandbox_id=cid, cmd="true")
    bash = pb.ExecRequest(sandbox_id=cid, argv=E2B_ARGV)
    start = e2b_start_body()
    envd_headers = {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        "Connect-Timeout-Ms": "60000",
        "Keepalive-Ping-Interval": "50",
        "E2b-Sandbox-Id": cid,
        "E2b-Sandbox-Port": "49983",
        "X-Access-Token": sbx._envd_access_token or "",
    }

    def connect_httpx() -> None:
        r = http.post("/process.Process/Start", content=start, headers=envd_headers)
        r.raise_for_status()
        assert b'"end"' in r.content, r.content

    rows: dict[str, Callable[[], object]] = {
        "agent gRPC directly (sh -c true)": lambda: loop.run_until_complete(client.exec(sh)),
        "agent gRPC, SDK's argv (bash -l -c true)": lambda: loop.run_until_complete(
            client.exec(bash)
        ),
        "REST httpx (sh -c true)": lambda: http.post(
            f"/v1/capsules/{cid}/exec", json={"cmd": "true"}
        ).raise_for_status(),
        "REST httpx, SDK's argv": lambda: http.post(
            f"/v1/capsules/{cid}/exec", json={"cmd": E2B_ARGV[0], "args": E2B_ARGV[1:]}
        ).raise_for_status(),
        "E2B Connect Start, httpx": connect_httpx,
        "E2B SDK commands.run": lambda: sbx.commands.run("true"),
    }
    samples: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    try:
        for _ in range(n):
            for name, fn in rows.items():
                t, c = time.perf_counter(), time.process_time()
                fn()
                samples[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    finally:
        loop.run_until_complete(client.close())
        loop.close()
    names = list(rows)
    report(f"exec round trip, {names[0]}", samples[names[0]])
    report(f"exec round trip, {names[1]}", samples[names[1]], baseline=p50(samples[names[0]]))
    for name in names[2:]:
        base = samples[names[0]] if "sh -c" in name else samples[names[1]]
        report(f"exec round trip, {name}", samples[name], baseline=p50(base))
    # What the client itself spends (this process's CPU): the SDK's share of its round trip.
    for name in names[2:]:
        report(f"client CPU per call, {name}", cpu[name])


def e2b_start_body() -> bytes:
    """`process.Process/Start` of the SDK's command as one Connect JSON stream message."""
    message = json.dumps({"process": {"cmd": E2B_ARGV[0], "args": E2B_ARGV[1:]}}).encode()
    return struct.pack(">BI", 0, len(message)) + message


def rest_create_exec(http: httpx.Client) -> float:
    """Seconds from the create call until its first command is done (not the delete after)."""
    t = time.perf_counter()
    cid = http.post("/v1/capsules", json={}).raise_for_status().json()["id"]
    http.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}).raise_for_status()
    elapsed = time.perf_counter() - t
    http.delete(f"/v1/capsules/{cid}")
    return elapsed


def e2b_create_exec(opts: dict[str, str]) -> float:
    t = time.perf_counter()
    sbx = Sandbox.create("base", **opts)
    sbx.commands.run("true")
    elapsed = time.perf_counter() - t
    sbx.kill()
    return elapsed


def create_rows(http: httpx.Client, opts: dict[str, str], iterations: int) -> None:
    rest_create_exec(http)
    e2b_create_exec(opts)
    # A gap between creates lets the warm pool refill, as an agent's pace would.
    rest = [gap(2.0, lambda: rest_create_exec(http)) for _ in range(iterations)]
    report("create -> first command, REST", rest)
    e2b = [gap(2.0, lambda: e2b_create_exec(opts)) for _ in range(iterations)]
    report("create -> first command, E2B SDK", e2b, baseline=p50(rest))


def rest_write(http: httpx.Client, cid: str, payload: bytes) -> None:
    http.post(
        f"/v1/capsules/{cid}/files/stream/write",
        data={"path": FILE},
        files={"file": ("big.bin", payload)},
    ).raise_for_status()


def rest_read(http: httpx.Client, cid: str) -> None:
    with http.stream("POST", f"/v1/capsules/{cid}/files/stream/read", json={"path": FILE}) as r:
        r.raise_for_status()
        got = sum(len(chunk) for chunk in r.iter_bytes())
    assert got == BIG, got


def run(iterations: int, api: str, target: str, files: bool = True, creates: bool = True) -> None:
    print(load_note(), flush=True)
    with httpx.Client(base_url=api, timeout=300, trust_env=False) as anon:
        body = {"email": "bench@wrenn.local", "password": "bench-password-123", "name": "Bench"}
        token = anon.post("/v1/auth/signup", json=body).json()["token"]
        key = anon.post(
            "/v1/api-keys", json={"name": "bench"}, headers={"Authorization": f"Bearer {token}"}
        ).json()["key"]
    opts = {"api_key": key, "api_url": api, "sandbox_url": api}
    payload = os.urandom(BIG)
    with httpx.Client(
        base_url=api, timeout=300, headers={"X-API-Key": key}, trust_env=False
    ) as http:
        try:
            if creates:
                create_rows(http, opts, iterations)

            sbx = Sandbox.create("base", timeout=3600, **opts)
            cid = sbx.sandbox_id
            sbx.commands.run("true")
            exec_rows(http, api, target, sbx, iterations * 10)

            if not files:
                return
            write_rest = timed(lambda: rest_write(http, cid, payload), 3)
            report("100 MB write, REST (multipart stream)", write_rest, unit="s")
            read_rest = timed(lambda: rest_read(http, cid), 3)
            report("100 MB read, REST (stream)", read_rest, unit="s")
            write_e2b = timed(lambda: sbx.files.write(FILE, payload), 3)
            report("100 MB write, E2B SDK", write_e2b, baseline=p50(write_rest), unit="s")

            def e2b_read() -> None:
                assert len(sbx.files.read(FILE, format="bytes")) == BIG

            read_e2b = timed(e2b_read, 3)
            report("100 MB read, E2B SDK", read_e2b, baseline=p50(read_rest), unit="s")
        finally:
            for item in http.get("/v1/capsules").json():
                if item["status"] != "stopped":
                    http.delete(f"/v1/capsules/{item['id']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--no-files", action="store_true", help="skip the 100 MB file rows")
    parser.add_argument("--no-create", action="store_true", help="skip the create rows")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cp = None
    with agent(args.data_dir, SECRET) as target, tempfile.TemporaryDirectory() as cp_dir:
        try:
            port = free_port()
            env = {
                **os.environ,
                "WRENN_AGENT_ADDRESS": target,
                "WRENN_AGENT_SECRET": SECRET,
                "WRENN_DEV_MODE": "1",
                "WRENN_LOG_LEVEL": "WARNING",
                "WRENN_SIGNUP": "open",
                "WRENN_PROXY_DOMAIN": f"localhost:{port}",
            }
            argv = [sys.executable, "-m", "wrenn_server.cli", "server",
                    "--data-dir", cp_dir, "--port", str(port)]  # fmt: skip
            cp = subprocess.Popen(argv, env=env)
            api = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{api}/health", trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            run(args.iterations, api, target, files=not args.no_files, creates=not args.no_create)
        finally:
            if cp is not None:
                cp.terminate()
                cp.wait(30)


if __name__ == "__main__":
    main()
