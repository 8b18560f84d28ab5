"""Port proxy benchmark: a small GET's round trip through the proxy (`{port}-{id}.<domain>` as
Host, to the control plane) vs the same request straight to the capsule's address from the host
(the baseline, measured in the same run), with a new connection per request and with one kept
alive, and over one Tunnel call straight to the host agent (its and envd's part alone); a 1 GiB
download's throughput both ways, with the control plane's RSS and the CPU time of the control
plane and the host agent during it; and a WebSocket echo's round trip both ways. Prints medians
and p95.

    sudo uv run python -m bench.proxy_bench [--iterations N]

It starts its own host agent on /var/lib/wrenn-bench-proxy and `wrenn server` on SQLite, so it
does not disturb a running platform or the other benches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import httpx_ws

from tests.integration.test_rest_proxy import WS_ECHO
from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.proc import command_lines
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, free_port, report, stats

SECRET = "bench-secret"
SUBNET = "10.204.0.0/16"
GIB = 1024**3
HTTP_PORT, WS_PORT = 8000, 9000

# An HTTP/1.1 server with python3 alone: `/` is a few bytes, `/big?n=N` N zero bytes written in
# 1 MiB pieces (generated, so no disk or page cache in the way).
SERVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
PIECE = bytes(1 << 20)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes
    def do_GET(self):
        if self.path.startswith("/big?n="):
            n = int(self.path[7:])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0:
                self.wfile.write(PIECE[: min(n, len(PIECE))])
                n -= len(PIECE)
            return
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\\n")
    def log_message(self, *args):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
"""

Endpoint = tuple[str, int, dict[str, str]]  # address, port, headers (Host, credentials)


def capsule_ip(data_dir: Path, sandbox_id: str) -> str:
    for meta_path in (data_dir / "capsules").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        if meta["sandbox_id"] == sandbox_id:
            return str(meta["net"]["capsule_ip"])
    raise LookupError(sandbox_id)


def get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> bytes:
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise SystemExit(f"GET {path}: {resp.status} {body[:200]!r}")
    return body


def round_trips(endpoint: Endpoint, n: int, keep_alive: bool) -> list[float]:
    address, port, headers = endpoint
    samples = []
    conn = http.client.HTTPConnection(address, port, timeout=30)
    try:
        for _ in range(n):
            if not keep_alive:
                conn.close()
                conn = http.client.HTTPConnection(address, port, timeout=30)
            t = time.perf_counter()
            get(conn, "/", headers)
            samples.append(time.perf_counter() - t)
    finally:
        conn.close()
    return samples


async def tunnel_round_trips(target: str, cid: str, n: int) -> list[float]:
    """The same GET over one Tunnel call straight to the host agent: the agent and envd's part
    of a proxied request, without the control plane."""
    request = b"GET / HTTP/1.1\r\nHost: capsule\r\n\r\n"
    samples = []
    async with AgentClient(target, SECRET) as c:
        call = c.tunnel()
        await call.write(pb.TunnelFrame(open=pb.TunnelOpen(sandbox_id=cid, port=HTTP_PORT)))
        await call.read()
        try:
            for _ in range(n):
                t = time.perf_counter()
                await call.write(pb.TunnelFrame(data=request))
                received = b""
                while not received.endswith(b"\r\n\r\nok\n"):
                    frame = await call.read()
                    assert isinstance(frame, pb.TunnelFrame) and frame.data, "tunnel ended"
                    received += frame.data
                samples.append(time.perf_counter() - t)
        finally:
            call.cancel()
    return samples


def download(endpoint: Endpoint, size: int) -> float:
    """Seconds to receive `size` bytes of one response."""
    address, port, headers = endpoint
    conn = http.client.HTTPConnection(address, port, timeout=60)
    buf = memoryview(bytearray(1 << 20))
    try:
        t = time.perf_counter()
        conn.request("GET", f"/big?n={size}", headers=headers)
        resp = conn.getresponse()
        received = 0
        while count := resp.readinto(buf):
            received += count
        elapsed = time.perf_counter() - t
    finally:
        conn.close()
    if resp.status != 200 or received != size:
        raise SystemExit(f"download: status {resp.status}, {received} of {size} bytes")
    return elapsed


@contextlib.contextmanager
def peak_rss(pid: int) -> Iterator[Callable[[], float]]:
    """The process's largest RSS (MB) seen while the block runs, sampled every 50 ms."""
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: peak[0]
    finally:
        done.set()
        thread.join()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_pid(target: str) -> int | None:
    """The host agent process listening at `target` (started by the bench), if found."""
    for pid, argv in command_lines():
        if b"agent" in argv and target.encode() in argv:
            return pid
    return None


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def ws_round_trips(base_url: str, headers: dict[str, str], n: int) -> list[float]:
    samples = []
    with (
        httpx.Client(base_url=base_url, timeout=30, trust_env=False) as http,
        httpx_ws.connect_ws("/echo", http, headers=headers) as ws,
    ):
        for i in range(n):
            message = f"message {i}"
            t = time.perf_counter()
            ws.send_text(message)
            if ws.receive_text() != message:
                raise SystemExit("the echo answered something else")
            samples.append(time.perf_counter() - t)
    return samples


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException, httpx.HTTPError):
            if check():
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def measure(args: argparse.Namespace, api: str, cp_pid: int) -> None:
    with httpx.Client(base_url=api, timeout=120, trust_env=False) as http:
        body = {"email": "bench@wrenn.local", "password": "bench-password-123", "name": "Bench"}
        token = http.post("/v1/auth/signup", json=body).json()["token"]
        key = http.post(
            "/v1/api-keys", json={"name": "bench"}, headers={"Authorization": f"Bearer {token}"}
        ).json()["key"]
        http.headers["X-API-Key"] = key
        cid = http.post("/v1/capsules", json={}).json()["id"]
        try:
            for script in (SERVER, WS_ECHO.replace('"127.0.0.1", 9000', '"0.0.0.0", 9000')):
                http.post(
                    f"/v1/capsules/{cid}/exec",
                    json={"cmd": "python3", "args": ["-c", script], "background": True},
                ).raise_for_status()
            run(args, api, cp_pid, key, cid, capsule_ip(args.data_dir, cid))
        finally:
            http.delete(f"/v1/capsules/{cid}")


def run(args: argparse.Namespace, api: str, cp_pid: int, key: str, cid: str, ip: str) -> None:
    cp_port = int(api.rsplit(":", 1)[1])
    proxied: Endpoint = (
        "127.0.0.1",
        cp_port,
        {"Host": f"{HTTP_PORT}-{cid}.localhost", "X-API-Key": key},
    )
    direct: Endpoint = (ip, HTTP_PORT, {})
    for endpoint in (direct, proxied):
        wait_until(lambda e=endpoint: bool(round_trips(e, 1, False)), "the web server")
    n = args.iterations
    for keep_alive in (False, True):
        kind = "kept-alive connection" if keep_alive else "new connection each"
        round_trips(direct, 20, keep_alive)
        round_trips(proxied, 20, keep_alive)
        base = round_trips(direct, n, keep_alive)
        via = round_trips(proxied, n, keep_alive)
        report(f"GET round trip, direct ({kind})", base)
        report(f"GET round trip, proxied ({kind})", via, baseline=stats(base)["p50"])
    agent_only = asyncio.run(tunnel_round_trips(args.target, cid, n))
    report("GET round trip, agent Tunnel kept open", agent_only, baseline=stats(base)["p50"])

    idle_rss = rss_mb(cp_pid)
    rates: dict[str, list[float]] = {"direct": [], "proxied": []}
    peak = 0.0
    pids = {"control plane": cp_pid, "host agent": agent_pid(args.target)}
    cpu = dict.fromkeys(pids, 0.0)
    for _ in range(args.downloads):
        rates["direct"].append(GIB / download(direct, GIB) / 1e6)
        before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        with peak_rss(cp_pid) as seen:
            rates["proxied"].append(GIB / download(proxied, GIB) / 1e6)
        for name, start in before.items():
            cpu[name] += cpu_seconds(pids[name] or 0) - start
        peak = max(peak, seen())
    base_rate = stats(rates["direct"])["p50"]
    for name, values in rates.items():
        s = stats(values)
        line = f"1 GiB download, {name:<8} p50 {s['p50']:7.1f} MB/s   min {min(values):7.1f} MB/s"
        if name == "proxied":
            line += f"   p50/baseline {s['p50'] / base_rate:5.2f}x"
        print(f"{line}   (n={len(values)})", flush=True)
    print(f"control plane RSS: {idle_rss:.1f} MB before, {peak:.1f} MB at most while proxying")
    spent = ", ".join(f"{name} {seconds / args.downloads:.1f} s" for name, seconds in cpu.items())
    print(f"CPU time per proxied GiB: {spent}")

    ws_proxied = {"Host": f"{WS_PORT}-{cid}.localhost", "X-API-Key": key}
    wait_until(lambda: bool(ws_round_trips(f"http://{ip}:{WS_PORT}", {}, 1)), "the echo server")
    base = ws_round_trips(f"http://{ip}:{WS_PORT}", {}, n)
    via = ws_round_trips(api, ws_proxied, n)
    report("WebSocket echo, direct", base)
    report("WebSocket echo, proxied", via, baseline=stats(base)["p50"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--downloads", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench-proxy"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cp = None
    with agent(args.data_dir, SECRET, SUBNET) as target, tempfile.TemporaryDirectory() as cp_dir:
        port = free_port()
        env = {
            **os.environ,
            "WRENN_AGENT_ADDRESS": target,
            "WRENN_AGENT_SECRET": SECRET,
            "WRENN_DEV_MODE": "1",
            "WRENN_LOG_LEVEL": "WARNING",
            "WRENN_SIGNUP": "open",  # the bench signs up its own account
        }
        argv = [sys.executable, "-m", "wrenn_server.cli", "server",
                "--data-dir", cp_dir, "--port", str(port)]  # fmt: skip
        cp = subprocess.Popen(argv, env=env)
        api = f"http://127.0.0.1:{port}"
        try:
            wait_until(
                lambda: httpx.get(f"{api}/health", trust_env=False).status_code == 200,
                "the control plane",
            )
            args.target = target
            measure(args, api, cp.pid)
        finally:
            cp.terminate()
            cp.wait(30)


if __name__ == "__main__":
    main()
