"""The port proxy as `wrenn up` sets it up, with real name resolution: a control plane process
(`wrenn server`, WRENN_PROXY_DOMAIN=localhost:<port>) over the real host agent, the published
SDK with the base URL `http://localhost:<port>`, and `*.localhost` resolved by the system
(nss-myhostname, scripts/install-deps.sh), no Host header set by hand. `get_url(port)` serves a
web server started in the capsule: a page, a WebSocket echo, 100 MB streamed with its checksum
while the control plane's memory stays flat.

And from inside a capsule (as root and as nobody), the same names and the host's addresses do
not lead to the control plane: `<its port>-<another capsule>.localhost` does not resolve there,
or lands on the capsule's own loopback; the host's addresses are firewalled. The proxy's port
is the capsule's: `<the control plane's port>-<capsule>` reaches the capsule's own listener."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import httpx_ws
import pytest

from tests.ports import free_port

from ..server_process import start_server
from .conftest import SECRET, AgentProcess
from .netfixtures import host_ipv4_addresses, quote
from .test_rest_proxy import WS_ECHO
from .test_sdk import sdk  # noqa: F401

pytestmark = pytest.mark.integration

BIG = 100 * 1000 * 1000
# The control plane relays the download as it comes: its peak resident memory may grow by far
# less than the body (a buffered body would add all of it).
MAX_GROWTH = 40 * 1024 * 1024


@dataclass
class ControlPlane:
    proc: subprocess.Popen[bytes]
    port: int
    key: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.port}"

    def reset_peak(self) -> None:
        """VmHWM back to the current VmRSS (proc(5): clear_refs)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (the peak since start or reset_peak), bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status)
        return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


@pytest.fixture(scope="module")
def control_plane(
    agent_process: AgentProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """`wrenn server` as `wrenn up` starts it, on every address of the host (the attacks below
    try them all), over the session's agent."""
    data_dir = tmp_path_factory.mktemp("localhost-controlplane")
    port = free_port()
    env = {
        **os.environ,
        "WRENN_AGENT_ADDRESS": agent_process.target,
        "WRENN_AGENT_SECRET": SECRET,
        "WRENN_JWT_SECRET": secrets.token_urlsafe(32),
        "WRENN_PROXY_DOMAIN": f"localhost:{port}",
        "WRENN_SIGNUP": "open",
        "WRENN_RECONCILE_INTERVAL_SEC": "0",  # the session's agent holds other tests' capsules
    }
    proc, url, log = start_server(data_dir, env, "--host", "0.0.0.0", port=port)
    try:
        with httpx.Client(base_url=url, trust_env=False) as http:
            email = f"localhost-{secrets.token_hex(4)}@example.com"
            body = {"email": email, "password": "localhost-password", "name": "L"}
            token = http.post("/v1/auth/signup", json=body).json()["token"]
            key = http.post(
                "/v1/api-keys", json={"name": "l"}, headers={"Authorization": f"Bearer {token}"}
            ).json()["key"]
        yield ControlPlane(proc, port, key, log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def no_proxy_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK derives the domain from its base URL, as a user's would after `wrenn up`."""
    monkeypatch.delenv("WRENN_PROXY_DOMAIN", raising=False)


def resolves_to_loopback(url: str) -> list[str]:
    """The system's answer for the URL's host: loopback only (nss-myhostname), else the setup
    is missing (scripts/install-deps.sh provides it)."""
    parsed = httpx.URL(url)
    try:
        infos = socket.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        pytest.fail(f"{parsed.host} does not resolve ({e}): run scripts/install-deps.sh")
    addrs = sorted({str(info[4][0]) for info in infos})
    assert all(ipaddress.ip_address(a).is_loopback for a in addrs), addrs
    return addrs


def wait_for_service(http: httpx.Client, url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while (resp := http.get(url)).status_code == 502:
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.1)
    return resp


def user_session(wrenn: Any, cp: ControlPlane) -> dict[str, Any]:
    """What a user writes after `wrenn up`: a capsule, servers in it, requests to their URLs."""
    seen: dict[str, Any] = {}
    with (
        wrenn.Capsule(api_key=cp.key, base_url=cp.base_url) as capsule,
        httpx.Client(headers={"X-API-Key": cp.key}, timeout=120, trust_env=False) as http,
    ):
        made = capsule.commands.run(
            f"mkdir -p /tmp/srv && echo served > /tmp/srv/index.html && "
            f"head -c {BIG} /dev/urandom > /tmp/srv/big.bin && sha256sum /tmp/srv/big.bin",
            timeout=120,
        )
        seen["sha256_inside"] = made.stdout.split()[0]
        capsule.commands.run("cd /tmp/srv && python3 -m http.server 8000", background=True)
        capsule.files.write("/tmp/srv/ws.py", WS_ECHO)
        capsule.commands.run("python3 /tmp/srv/ws.py", background=True)
        url, ws_url = capsule.get_url(8000), capsule.get_url(9000)
        seen["capsule_id"], seen["url"] = capsule.capsule_id, url
        seen["addresses"] = resolves_to_loopback(url)
        resp = wait_for_service(http, f"{url}/index.html")
        seen["page"] = (resp.status_code, resp.text)

        cp.reset_peak()
        before = cp.memory()
        digest, size = hashlib.sha256(), 0
        with http.stream("GET", f"{url}/big.bin") as resp:
            seen["big_status"] = resp.status_code
            for chunk in resp.iter_raw():
                digest.update(chunk)
                size += len(chunk)
        seen["big"] = (size, digest.hexdigest())
        seen["memory"] = (before, cp.memory())

        deadline = time.monotonic() + 30
        # Until it listens; a plain GET is no WebSocket handshake (502 with a message).
        while "nothing is listening" in (resp := http.get(ws_url)).text:
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.1)
        with httpx_ws.connect_ws(f"{ws_url}/echo", http) as ws:
            ws.send_text("hello over localhost")
            seen["ws_text"] = ws.receive_text()
            ws.send_bytes(bytes(range(256)) * 200)
            seen["ws_bytes"] = ws.receive_bytes()
    return seen


async def test_get_url_over_real_localhost_names(
    sdk: ModuleType,  # noqa: F811
    control_plane: ControlPlane,
    no_proxy_domain: None,
) -> None:
    cp = control_plane
    seen = await asyncio.to_thread(user_session, sdk, cp)
    assert seen["url"] == f"http://8000-{seen['capsule_id']}.localhost:{cp.port}"
    assert "127.0.0.1" in seen["addresses"]
    assert seen["page"] == (200, "served\n")
    assert seen["big_status"] == 200
    assert seen["big"] == (BIG, seen["sha256_inside"])
    before, after = seen["memory"]
    assert after["VmHWM"] - before["VmRSS"] < MAX_GROWTH, seen["memory"]
    assert seen["ws_text"] == "hello over localhost"
    assert seen["ws_bytes"] == bytes(range(256)) * 200


# Inside a capsule: answers anything on the control plane's port number, on its own loopback.
DECOY = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
while True:
    c = s.accept()[0]
    c.recv(65536)
    c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\ncapsule-own")
    c.close()
"""

# Inside a capsule: resolve each name, then send an API request (with the team's key, which the
# capsule's code may well know) to each address found and to each address given, all at once;
# prints {"uid", "resolved": {name: [addresses] | "FAIL ..."}, "answers": {target: text}}.
ATTACK = """
import json, os, socket, sys, threading
cfg = json.loads(sys.argv[1])
if cfg["nobody"]:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
port, out = cfg["port"], {"uid": os.getuid(), "resolved": {}, "answers": {}}
def ask(target, addr, host):
    try:
        s = socket.create_connection((addr, port), timeout=1.5)
        s.sendall(("GET /v1/capsules HTTP/1.1\\r\\nHost: %s\\r\\nX-API-Key: %s\\r\\n"
                   "Connection: close\\r\\n\\r\\n" % (host, cfg["key"])).encode())
        data = b""
        while len(data) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        out["answers"][target] = data.decode("latin-1")
    except Exception as e:
        out["answers"][target] = "FAIL " + type(e).__name__
jobs = [(a, a, cfg["host"]) for a in cfg["addresses"]]
for name in cfg["names"]:
    try:
        found = sorted({i[4][0] for i in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)})
    except OSError as e:
        out["resolved"][name] = "FAIL " + type(e).__name__
        continue
    out["resolved"][name] = found
    jobs += [(name + "@" + a, a, "%s:%d" % (name, port)) for a in found]
threads = [threading.Thread(target=ask, args=job) for job in jobs]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(out))
"""


def gateway(capsule: Any) -> str:
    """The capsule's default gateway: the host's side of its veth pair."""
    route = capsule.commands.run("ip route show default").stdout.split()
    return str(route[route.index("via") + 1])


def attack_session(wrenn: Any, cp: ControlPlane) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with (
        wrenn.Capsule(api_key=cp.key, base_url=cp.base_url) as victim,
        wrenn.Capsule(api_key=cp.key, base_url=cp.base_url) as attacker,
        httpx.Client(headers={"X-API-Key": cp.key}, timeout=60, trust_env=False) as http,
    ):
        attacker.files.write("/tmp/srv/decoy.py", DECOY)
        attacker.files.write("/tmp/srv/attack.py", ATTACK)
        attacker.commands.run(f"python3 /tmp/srv/decoy.py {cp.port}", background=True)
        own_host = f"{cp.port}-{victim.capsule_id}.localhost:{cp.port}"
        host_addrs = [a for a in host_ipv4_addresses() if not a.startswith("127.")]
        # Loopback first (the capsule's own), then the host's addresses and the gateway.
        addresses = list(dict.fromkeys(["127.0.0.1", "::1", *host_addrs, gateway(attacker)]))
        names = [f"{cp.port}-{victim.capsule_id}.localhost", "localhost"]
        for who in ("root", "nobody"):
            cfg = {"nobody": who == "nobody", "port": cp.port, "key": cp.key,
                   "host": own_host, "addresses": addresses, "names": names}  # fmt: skip
            deadline = time.monotonic() + 30
            while True:
                # As root (the default user's sudo), which drops to nobody for the second.
                res = attacker.commands.run(
                    f"sudo python3 /tmp/srv/attack.py {quote(json.dumps(cfg))}", timeout=60
                )
                assert res.exit_code == 0, res.stderr
                out = json.loads(res.stdout)
                # The decoy starts in the background: wait until it answers on loopback.
                if "capsule-own" in out["answers"]["127.0.0.1"]:
                    break
                assert time.monotonic() < deadline, out
                time.sleep(0.1)
            seen[who] = out
        # From the host, the control plane's port number in the attacker's proxy name is the
        # attacker's port: its decoy answers, not the control plane.
        url = attacker.get_url(cp.port)
        seen["proxied"] = wait_for_service(http, f"{url}/v1/capsules").text
        seen["from_host"] = {
            a: http.get(f"http://{a}:{cp.port}/health").status_code for a in addresses if a != "::1"
        }
    seen["addresses"] = addresses
    return seen


async def test_a_capsule_cannot_reach_the_control_plane_by_proxy_names(
    sdk: ModuleType,  # noqa: F811
    control_plane: ControlPlane,
    no_proxy_domain: None,
) -> None:
    cp = control_plane
    seen = await asyncio.to_thread(attack_session, sdk, cp)
    # From the host itself, the control plane answers on every one of those addresses.
    assert seen["from_host"] == {a: 200 for a in seen["addresses"] if a != "::1"}
    assert (seen["root"]["uid"], seen["nobody"]["uid"]) == (0, 65534)
    for who in ("root", "nobody"):
        out = seen[who]
        for name, found in out["resolved"].items():
            # Unresolvable in the capsule, or its own loopback.
            if isinstance(found, str):
                assert found.startswith("FAIL"), (who, name, found)
            else:
                assert all(ipaddress.ip_address(a).is_loopback for a in found), (who, name)
        for target, answer in out["answers"].items():
            # Never the control plane: refused, dropped, or the capsule's own listener.
            assert answer.startswith("FAIL") or answer.endswith("capsule-own"), (who, target)
        assert out["answers"]["127.0.0.1"].endswith("capsule-own")
        for addr in seen["addresses"][2:]:  # the host's addresses and the capsule's gateway
            assert out["answers"][addr].startswith("FAIL"), (who, addr, out["answers"][addr])
    assert seen["proxied"] == "capsule-own"
