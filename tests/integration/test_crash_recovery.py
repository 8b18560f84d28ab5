"""kill -9 of the host agent and of the control plane (`wrenn server`, its own process on SQLite
in its data dir) while capsules run, are paused and are being created: after each restarts, the
control plane's view converges on the agent's (its reconciler), every capsule it lists as
running answers a command with its files and processes, every paused one resumes with its
files, none is left `starting`, the agent keeps no capsule the API does not list, and after the
capsules are destroyed nothing is left on the host (leaks.py). A paused capsule made before a
control plane restart resumes after it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..server_process import start_server
from ..waiting import wait_for
from .conftest import DATA_DIR, SECRET, AgentProcess
from .leaks import leaks, pooled_handles

pytestmark = pytest.mark.integration

# Commands run as root: a template need not have the base template's default user.
HOME = "/root"
# Not the warm pool's shape: such a create boots a capsule, so it can be caught half-way.
BOOTED = {"memory_mb": 256}


@dataclass
class ControlPlane:
    data_dir: Path
    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> None:
        self.proc, self.url, _log = start_server(self.data_dir, self.env, port=self.port or None)
        self.port = int(self.url.rsplit(":", 1)[1])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class User:
    cp: ControlPlane
    key: str

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.cp.url, headers={"X-API-Key": self.key}, timeout=300, trust_env=False
        )


@pytest.fixture
async def platform(
    agent_process: AgentProcess, agent: AgentClient, tmp_path: Path
) -> AsyncIterator[tuple[ControlPlane, User]]:
    """A control plane of its own over the session's agent, which then holds no capsule but
    its pool's (the data dir is this tier's own): what the agent holds is this test's."""
    for sandbox_id in await _agent_ids(agent):
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sandbox_id))
    env = {
        **os.environ,
        "WRENN_AGENT_ADDRESS": agent_process.target,
        "WRENN_AGENT_SECRET": SECRET,
        "WRENN_JWT_SECRET": secrets.token_urlsafe(32),
        "WRENN_SIGNUP": "open",
        "WRENN_RECONCILE_INTERVAL_SEC": "1",
        # A create left `starting` by a killed control plane is an error after this (the
        # product's 10 minutes would be most of the test).
        "WRENN_CREATE_GRACE_SEC": "20",
    }
    cp = ControlPlane(tmp_path / "controlplane", env)
    cp.data_dir.mkdir()
    await asyncio.to_thread(cp.start)
    try:
        async with httpx.AsyncClient(base_url=cp.url, trust_env=False, timeout=60) as http:
            body = {"email": f"crash-{secrets.token_hex(4)}@example.com", "password": "x" * 12}
            token = (await http.post("/v1/auth/signup", json={**body, "name": "C"})).json()["token"]
            made = await http.post(
                "/v1/api-keys", json={"name": "k"}, headers={"Authorization": f"Bearer {token}"}
            )
        yield cp, User(cp, made.json()["key"])
    finally:
        await asyncio.to_thread(cp.stop)


async def _create(api: httpx.AsyncClient, **body: Any) -> str:
    resp = await api.post("/v1/capsules", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def _exec(api: httpx.AsyncClient, cid: str, cmd: str) -> httpx.Response:
    return await api.post(
        f"/v1/capsules/{cid}/exec", json={"cmd": cmd, "timeout_sec": 30, "user": "root"}
    )


async def _listed(api: httpx.AsyncClient) -> dict[str, str]:
    resp = await api.get("/v1/capsules")
    assert resp.status_code == 200, resp.text
    return {c["id"]: c["status"] for c in resp.json()}


async def _new_capsule_dir(before: set[str]) -> str:
    """The handle of a capsule the agent started making after `before` was taken."""

    def fresh() -> str | None:
        made = {p.name for p in (DATA_DIR / "capsules").iterdir()} - before
        made -= pooled_handles(DATA_DIR)
        return next(iter(made), None)

    return await wait_for(fresh, 120, what="a create under way on the agent")


async def _prepare(api: httpx.AsyncClient, **body: Any) -> tuple[str, str]:
    """A running capsule with a file and a background process, a paused one with a file."""
    live, paused = await _create(api, **body), await _create(api, **body)
    started = await _exec(
        api, live, f"echo kept > {HOME}/f && (nohup sleep 3600 >/dev/null 2>&1 &)"
    )
    assert started.status_code == 200 and started.json()["exit_code"] == 0, started.text
    wrote = await _exec(api, paused, f"echo also-kept > {HOME}/f")
    assert wrote.status_code == 200 and wrote.json()["exit_code"] == 0, wrote.text
    resp = await api.post(f"/v1/capsules/{paused}/pause")
    assert resp.status_code == 200, resp.text
    return live, paused


async def _agent_ids(agent: AgentClient) -> dict[str, int]:
    listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
    pooled = pooled_handles(DATA_DIR)
    return {sb.sandbox_id: sb.status for sb in listed.sandboxes if sb.sandbox_id not in pooled}


async def _converged(api: httpx.AsyncClient, agent: AgentClient) -> dict[str, str]:
    """The API's list once no capsule is `starting` or `missing` and the agent holds exactly
    the capsules the API lists as running or paused, in the same status."""
    names = {pb.SANDBOX_STATUS_RUNNING: "running", pb.SANDBOX_STATUS_PAUSED: "paused"}
    last: list[object] = []

    async def agreed() -> dict[str, str] | None:
        try:
            listed = await _listed(api)
            held = await _agent_ids(agent)
        except (httpx.HTTPError, AssertionError, grpc.aio.AioRpcError) as e:
            last[:] = [repr(e)]
            return None
        last[:] = [listed, held]
        if any(s in ("starting", "missing") for s in listed.values()):
            return None
        live = {cid: s for cid, s in listed.items() if s in ("running", "paused")}
        if live != {cid: names.get(s, str(s)) for cid, s in held.items()}:
            return None
        return listed

    try:
        return await wait_for(agreed, 150, interval=0.5, what="the API and the agent agreeing")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen (API, agent): {last}") from None


async def _check_kept(api: httpx.AsyncClient, live: str, paused: str) -> None:
    got = await _exec(api, live, f"cat {HOME}/f; pgrep -x sleep >/dev/null && echo up")
    assert got.status_code == 200, got.text
    assert got.json()["stdout"] == "kept\nup\n", got.text
    resp = await api.post(f"/v1/capsules/{paused}/resume")
    assert resp.status_code == 200, resp.text
    got = await _exec(api, paused, f"cat {HOME}/f")
    assert got.status_code == 200 and got.json()["stdout"] == "also-kept\n", got.text


async def _every_running_one_answers(api: httpx.AsyncClient, listed: dict[str, str]) -> None:
    for cid, status in listed.items():
        if status == "running":
            got = await _exec(api, cid, "echo alive")
            assert got.status_code == 200 and got.json()["stdout"] == "alive\n", (cid, got.text)


async def _destroy_all_and_check_leaks(api: httpx.AsyncClient, seen: set[str]) -> None:
    for cid, status in (await _listed(api)).items():
        if status not in ("stopped", "error"):
            resp = await api.delete(f"/v1/capsules/{cid}")
            assert resp.status_code == 204, resp.text
    try:
        await wait_for(lambda: not leaks(DATA_DIR, seen), 60, interval=0.5, what="no leaks")
    except AssertionError as e:
        raise AssertionError(f"{e}: {leaks(DATA_DIR, seen)}") from None


async def test_the_leak_checker_sees_a_live_capsule(
    platform: tuple[ControlPlane, User], agent: AgentClient
) -> None:
    """What the checker looks for is there while a capsule lives (so its clean bill means
    something), and gone after its destroy."""
    _cp, user = platform
    async with user.client() as api:
        cid = await _create(api, **BOOTED)
        found = {leak.kind for leak in leaks(DATA_DIR, {cid})}
        expected = {"capsule directory", "address slot", "runsc state", "mount", "loop device"}
        assert expected | {"netns", "veth", "process", "cgroup"} <= found, found
        await _destroy_all_and_check_leaks(api, {cid})


async def test_agent_killed_with_capsules_running_and_a_create_in_flight(
    platform: tuple[ControlPlane, User], agent_process: AgentProcess, agent: AgentClient
) -> None:
    _cp, user = platform
    async with user.client() as api:
        live, paused = await _prepare(api)
        before = {p.name for p in (DATA_DIR / "capsules").iterdir()}
        creating = asyncio.ensure_future(api.post("/v1/capsules", json=BOOTED))
        half_made = await _new_capsule_dir(before)
        agent_process.kill9()
        answered = await creating
        # The create failed (the host went away) or, finished just before, made a capsule.
        assert answered.status_code in (201, 502, 503), answered.text
        await asyncio.to_thread(agent_process.start)

        listed = await _converged(api, agent)
        assert listed[live] == "running" and listed[paused] == "paused"
        if answered.status_code != 201:
            assert set(listed) == {live, paused}, listed
        await _every_running_one_answers(api, listed)
        await _check_kept(api, live, paused)
        await _destroy_all_and_check_leaks(api, {live, paused, half_made, *listed})


@pytest.mark.xfail(
    reason="known intermittent failure, seen only in the full suite: after the restart the "
    "host still held something for 60 s (see the leaks named in the failure); not yet "
    "explained, passes when run alone",
    strict=False,
)
async def test_control_plane_killed_mid_create_and_restarted(
    platform: tuple[ControlPlane, User], agent: AgentClient
) -> None:
    cp, user = platform
    async with user.client() as api:
        live, paused = await _prepare(api)
        before = {p.name for p in (DATA_DIR / "capsules").iterdir()}
        creating = asyncio.ensure_future(api.post("/v1/capsules", json=BOOTED))
        half_made = await _new_capsule_dir(before)
        cp.kill9()
        with pytest.raises(httpx.HTTPError):
            await creating
    await asyncio.to_thread(cp.start)  # the same data dir (its SQLite database) and port
    async with user.client() as api:
        listed = await _converged(api, agent)
        assert listed[live] == "running" and listed[paused] == "paused"
        await _every_running_one_answers(api, listed)
        await _check_kept(api, live, paused)
        await _destroy_all_and_check_leaks(api, {live, paused, half_made, *listed})


async def test_a_paused_capsule_resumes_after_a_control_plane_restart(
    platform: tuple[ControlPlane, User], agent: AgentClient
) -> None:
    cp, user = platform
    async with user.client() as api:
        live, paused = await _prepare(api)
    await asyncio.to_thread(cp.stop)
    await asyncio.to_thread(cp.start)
    async with user.client() as api:
        listed = await _converged(api, agent)
        assert (listed[live], listed[paused]) == ("running", "paused")
        await _check_kept(api, live, paused)
        await _destroy_all_and_check_leaks(api, {live, paused})


# What capsule records lacked before the warm pool (handle), dead-sandbox reports (exit_reason)
# and version reports (envd_version).
NEWER_FIELDS = ("handle", "exit_reason", "envd_version")


def _as_an_older_version_left_it(capsule_dir: Path) -> None:
    """The capsule's record without the fields added since, its directory and files readable
    by everyone (what versions before the data dir was made root's alone left)."""
    meta = capsule_dir / "meta.json"
    record = json.loads(meta.read_text())
    assert record["handle"] == record["sandbox_id"]  # not a pool capsule: named by its id
    for name in NEWER_FIELDS:
        record.pop(name)
    meta.write_text(json.dumps(record))
    capsule_dir.chmod(0o755)
    for f in capsule_dir.iterdir():
        if f.is_file():
            f.chmod(0o644)


async def test_capsules_of_an_older_agent_data_dir_are_kept_and_resume(
    platform: tuple[ControlPlane, User], agent_process: AgentProcess, agent: AgentClient
) -> None:
    """A newer agent started on what an older one left (records without the newer fields,
    loose modes): the running capsule is adopted with its processes, the paused one resumes
    with its files, and the data dir is made root's alone."""
    _cp, user = platform
    async with user.client() as api:
        live, paused = await _prepare(api, **BOOTED)
        agent_process.kill9()
        for cid in (live, paused):
            _as_an_older_version_left_it(DATA_DIR / "capsules" / cid)
        await asyncio.to_thread(agent_process.start)
        listed = await _converged(api, agent)
        assert (listed[live], listed[paused]) == ("running", "paused")
        await _check_kept(api, live, paused)
        for cid in (live, paused):
            assert stat.S_IMODE((DATA_DIR / "capsules" / cid).stat().st_mode) == 0o700
            meta = DATA_DIR / "capsules" / cid / "meta.json"
            assert stat.S_IMODE(meta.stat().st_mode) == 0o600
        await _destroy_all_and_check_leaks(api, {live, paused})
