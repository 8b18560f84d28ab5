"""A second host joining the platform the way a remote machine would: the control plane serves
HTTP on a real port with no host of its own; an admin creates a host; a real host agent process
registers with the one-time token, heartbeats, runs capsules the control plane places on it
(calling it with the host's own derived secret), is marked unreachable when it goes silent and
online again when it comes back, and pauses what it runs once its host is deleted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from tests.ports import free_port
from wrenn_server.agentproto.client import AgentClient
from wrenn_server.agentproto.tls import fingerprint
from wrenn_server.cli import KEEP_ALIVE_SEC
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.security import TokenCodec
from wrenn_server.controlplane.settings import Settings
from wrenn_server.hostagent import tls
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import PASSWORD, assert_error, bearer
from .conftest import DATA_DIR, AgentProcess

pytestmark = pytest.mark.integration


@dataclass
class Platform:
    client: httpx.AsyncClient
    url: str
    admin: dict[str, str]
    codec: TokenCodec


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    """A control plane on a real port, with no host configured (agent_address empty)."""
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "cp",
        jwt_secret=SecretStr("multihost-test-secret-" + "y" * 32),
        agent_address="",
        reconcile_interval_sec=0.5,
        host_down_after_sec=3.0,
    )
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_SEC,  # the product's (uvicorn's 5 s races clients)
        )
    )
    serving = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and not serving.done(), "control plane did not start"
            await asyncio.sleep(0.05)
        resp = await client.post(
            "/v1/auth/signup",
            json={"email": "admin@example.com", "password": PASSWORD, "name": "Admin"},
        )
        assert resp.status_code == 201, resp.text  # the first account: a platform admin
        yield Platform(client, url, bearer(resp.json()["token"]), app.state.codec)
    server.should_exit = True
    await serving


@dataclass
class RemoteAgent:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    target: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_remote_agent(
    tmp_path: Path, agent_process: AgentProcess
) -> Iterator[Callable[..., RemoteAgent]]:
    """Start a host agent with its own data dir (the base template copied from the test
    agent's, which `agent_process` has built, so no second image build) that registers with
    `token` at `url`."""
    started: list[RemoteAgent] = []
    data_dir = DATA_DIR.parent / f"{DATA_DIR.name}-remote"
    shutil.rmtree(data_dir, ignore_errors=True)
    (data_dir / "templates").mkdir(parents=True)
    template = DATA_DIR / "templates" / "minimal"
    subprocess.run(["cp", "-a", str(template), str(data_dir / "templates")], check=True)

    def start(url: str, token: str, **settings: str) -> RemoteAgent:
        target = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "WRENN_AGENT_CONTROL_PLANE_URL": url,
            "WRENN_AGENT_REGISTRATION_TOKEN": token,
            "WRENN_AGENT_HEARTBEAT_INTERVAL_SEC": "0.5",
            "WRENN_AGENT_CAPSULE_SUBNET": "10.202.0.0/16",
            "WRENN_AGENT_POOL_SIZE": "0",
            **settings,
        }
        env.pop("WRENN_AGENT_SECRET", None)
        log_path = tmp_path / "remote-agent.log"
        argv = [sys.executable, "-m", "wrenn_server.cli", "agent",
                "--data-dir", str(data_dir), "--listen", target]  # fmt: skip
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        agent = RemoteAgent(proc, data_dir, log_path, target)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGCONT)
            agent.proc.terminate()
            try:
                agent.proc.wait(30)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait()
    # Whatever it still runs goes with it (a test that failed half-way).
    cleanup = subprocess.run(
        [sys.executable, "-c", _CLEANUP, str(data_dir)], capture_output=True, text=True
    )
    assert cleanup.returncode == 0, cleanup.stderr
    shutil.rmtree(data_dir, ignore_errors=True)


# Destroys every capsule a stopped agent left in a data dir, through a short-lived agent.
_CLEANUP = """
import asyncio, secrets, sys
from pathlib import Path
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.server import AgentServer

async def main():
    data_dir = Path(sys.argv[1])
    settings = AgentSettings(
        data_dir=data_dir, listen=f"unix:{data_dir}/cleanup.sock", secret=secrets.token_hex(16),
        pool_size=0,
    )
    server = AgentServer(settings)
    await server.startup()
    for sandbox_id in list(server.manager.capsules):
        await server.manager.destroy(sandbox_id)
    await server.shutdown()

if Path(sys.argv[1]).is_dir():
    asyncio.run(main())
"""


async def _until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, agent: RemoteAgent
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout} s; agent log:\n{agent.log()[-3000:]}")


async def _host(p: Platform, host_id: str) -> dict[str, Any]:
    resp = await p.client.get(f"/v1/hosts/{host_id}", headers=p.admin)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _host_events(p: Platform) -> list[str]:
    resp = await p.client.get(
        "/v1/admin/audit-logs", params={"resource_type": "host"}, headers=p.admin
    )
    assert resp.status_code == 200, resp.text
    return [item["action"] for item in reversed(resp.json()["items"])]


async def test_a_registered_host_runs_capsules_and_is_monitored(
    platform: Platform, start_remote_agent: Callable[[str, str], RemoteAgent]
) -> None:
    p = platform
    created = await p.client.post("/v1/hosts", json={"type": "regular"}, headers=p.admin)
    assert created.status_code == 201, created.text
    host_id = created.json()["host"]["id"]
    agent = start_remote_agent(p.url, created.json()["registration_token"])

    async def online() -> bool:
        return str((await _host(p, host_id))["status"]) == "online"

    await _until(online, 120, "registration", agent)
    host = await _host(p, host_id)
    assert host["address"] == agent.target and host["cpu_cores"] >= 1
    assert (agent.data_dir / "host-credentials.json").stat().st_mode & 0o077 == 0

    # Its port speaks only TLS, with the certificate the control plane pinned at registration:
    # a plaintext caller gets nowhere, nor does one expecting another certificate (what the
    # control plane sees if something else answers at the host's address).
    certificate = (agent.data_dir / "tls" / "agent.crt").read_bytes()
    assert (agent.data_dir / "tls" / "agent.key").stat().st_mode & 0o077 == 0
    # What an operator compares: the agent's log and the host record name the same certificate.
    assert host["tls_fingerprint"] == fingerprint(certificate)
    line = f"TLS certificate SHA-256 {host['tls_fingerprint']}"

    async def logged() -> bool:  # the agent's log is written by another process
        return line in agent.log()

    await _until(logged, 10, "the certificate's log line", agent)
    secret = p.codec.agent_secret(ids.HOST.parse(host_id))
    for kwargs in ({}, {"certificate": tls.generate().cert_pem}):
        async with AgentClient(agent.target, secret, **kwargs) as outsider:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await outsider.list_sandboxes(pb.ListSandboxesRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    async with AgentClient(agent.target, secret, certificate=certificate) as pinned:
        await pinned.list_sandboxes(pb.ListSandboxesRequest(), timeout=10)
    # And it answers only the control plane's secret for this host, not the default one.
    async with AgentClient(agent.target, "dev-agent-secret", certificate=certificate) as stranger:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stranger.list_sandboxes(pb.ListSandboxesRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # A user's capsule lands on the only host there is, and runs commands.
    resp = await p.client.post(
        "/v1/auth/signup",
        json={"email": "user@example.com", "password": PASSWORD, "name": "User"},
    )
    user = bearer(resp.json()["token"])
    capsule = await p.client.post("/v1/capsules", json={}, headers=user)
    # Once seen: the agent stopped answering here (exit status, its log) - kept for a next time.
    assert capsule.status_code == 201, (capsule.text, agent.proc.poll(), agent.log()[-3000:])
    capsule_id = capsule.json()["id"]
    ran = await p.client.post(
        f"/v1/capsules/{capsule_id}/exec", json={"cmd": "echo", "args": ["remote"]}, headers=user
    )
    assert ran.status_code == 200 and ran.json()["stdout"] == "remote\n", ran.text

    async def capsule_status() -> str:
        resp = await p.client.get(f"/v1/capsules/{capsule_id}", headers=user)
        return str(resp.json()["status"])

    # Silence: the host is marked unreachable and its capsule missing...
    agent.proc.send_signal(signal.SIGSTOP)

    async def down() -> bool:
        return str((await _host(p, host_id))["status"]) == "unreachable"

    await _until(down, 40, "marked_down", agent)
    assert await capsule_status() == "missing"
    # ...and back: online again, the capsule running as before.
    agent.proc.send_signal(signal.SIGCONT)
    await _until(online, 30, "marked_up", agent)

    async def running() -> bool:
        return await capsule_status() == "running"

    await _until(running, 30, "capsule restored", agent)
    ran = await p.client.post(f"/v1/capsules/{capsule_id}/exec", json={"cmd": "true"}, headers=user)
    assert ran.status_code == 200, ran.text

    # Deleting a host that runs capsules needs force; then its agent is locked out.
    refused_delete = await p.client.delete(f"/v1/hosts/{host_id}", headers=p.admin)
    assert refused_delete.status_code == 409, refused_delete.text
    assert refused_delete.json()["error"]["sandbox_ids"] == [capsule_id]
    forced = await p.client.delete(f"/v1/hosts/{host_id}?force=true", headers=p.admin)
    assert forced.status_code == 204, forced.text
    assert await capsule_status() == "stopped"

    async def locked_out() -> bool:
        return "refused this host's credentials" in agent.log()

    await _until(locked_out, 30, "the agent noticing its deletion", agent)
    assert await _host_events(p) == ["add", "register", "marked_down", "marked_up", "delete"]


async def test_hosts_refuse_capsules_they_have_no_memory_for(
    platform: Platform, start_remote_agent: Callable[..., RemoteAgent]
) -> None:
    p = platform
    created = await p.client.post("/v1/hosts", json={"type": "regular"}, headers=p.admin)
    assert created.status_code == 201, created.text
    host_id = created.json()["host"]["id"]
    # An agent that keeps more memory for its host than the machine has: always "low" (its
    # overcommit leaves room in its reservations, so that it is MemAvailable that refuses).
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    agent = start_remote_agent(
        p.url,
        created.json()["registration_token"],
        WRENN_AGENT_MEMORY_RESERVE_MB=str(2 * total_mb),
        WRENN_AGENT_MEMORY_OVERCOMMIT="16",
    )

    async def online() -> bool:
        return str((await _host(p, host_id))["status"]) == "online"

    await _until(online, 120, "registration", agent)
    host = await _host(p, host_id)
    resp = await p.client.post(
        "/v1/auth/signup",
        json={"email": "lowmem@example.com", "password": PASSWORD, "name": "User"},
    )
    user = bearer(resp.json()["token"])

    # Bigger than the host: refused by the scheduler, the agent is not asked.
    too_big = await p.client.post(
        "/v1/capsules", json={"memory_mb": host["memory_mb"] + 1024}, headers=user
    )
    error = assert_error(too_big, 503, "no_hosts_available")
    assert f"no available host has {host['memory_mb'] + 1024} MB" in error["message"]
    # Would fit, but the host is low on memory: the agent refuses, nothing is left behind.
    refused = await p.client.post("/v1/capsules", json={}, headers=user)
    error = assert_error(refused, 503, "no_hosts_available")
    assert "low on memory" in error["message"]
    listed = await p.client.get("/v1/capsules", headers=user)
    assert listed.json() == []


async def test_a_registering_agent_already_listens_and_answers_no_one(
    start_remote_agent: Callable[..., RemoteAgent],
) -> None:
    """The control plane marks a host online when it registers and may call it at once: the
    agent listens before it registers (a refused first call would leave the control plane's
    channel waiting to retry), but answers no one until registration gives it its secret - not
    a caller holding the built-in default either. Here a stand-in control plane calls it from
    inside the registration request."""
    secret = "secret-given-at-registration"
    seen: dict[str, grpc.StatusCode] = {}
    app = FastAPI()

    @app.post("/v1/hosts/register", status_code=201)
    async def register(body: dict[str, Any]) -> dict[str, Any]:
        certificate = body["tls_certificate"].encode()
        for caller in ("dev-agent-secret", secret):
            async with AgentClient(body["address"], caller, certificate=certificate) as early:
                try:
                    await early.list_sandboxes(pb.ListSandboxesRequest(), timeout=10)
                    seen[caller] = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as e:
                    seen[caller] = e.code()
        host = {"id": "6f1c1a52-2c4e-4a5e-9a43-1d2f3b4c5d6e"}
        return {"host": host, "token": "t", "refresh_token": "r", "agent_secret": secret}

    @app.post("/v1/hosts/{host_id}/heartbeat", status_code=204)
    async def heartbeat(host_id: str) -> None:
        return None

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    try:
        agent = start_remote_agent(f"http://127.0.0.1:{port}", "a-token")

        async def registered() -> bool:
            return "registered as host" in agent.log()

        await _until(registered, 120, "registration", agent)
        assert seen == {
            "dev-agent-secret": grpc.StatusCode.UNAUTHENTICATED,
            secret: grpc.StatusCode.UNAUTHENTICATED,
        }
        certificate = (agent.data_dir / "tls" / "agent.crt").read_bytes()
        async with AgentClient(agent.target, secret, certificate=certificate) as control_plane:
            await control_plane.list_sandboxes(pb.ListSandboxesRequest(), timeout=10)
    finally:
        server.should_exit = True
        await serving
