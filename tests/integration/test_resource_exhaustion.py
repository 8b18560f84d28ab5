"""A host out of a resource answers a clear error and keeps serving: the data dir's disk full
(a small filesystem of the test's own, filled from the host), the agent out of file
descriptors (its RLIMIT_NOFILE lowered while it runs), its memory for capsules reserved, its
capsule addresses taken. Each time the refused call answers 503 `no_hosts_available` naming
what ran out and leaves nothing behind (no row, capsule directory, netns, address slot, mount),
the capsules already there keep answering, and once the resource frees the same call works
with no restart. Each test ends with the host checked for leaks (leaks.py).

Each test runs its own agent (its own data dir and settings; no warm pool and no boot
snapshots, so every create boots and needs room, and nothing else holds any) under a control
plane in-process over it, without the reconciler: what refuses is the agent, not the control
plane's copy of what the agent last reported."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from pydantic import SecretStr

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models import User
from wrenn_server.controlplane.settings import Settings
from wrenn_server.hostagent.capacity import resources
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.conftest import _empty_tables
from ..controlplane.helpers import assert_error
from ..ports import free_port
from ..waiting import wait_for
from .conftest import DATA_DIR, SECRET, AgentProcess
from .leaks import leaks
from .rest_fixtures import JWT_SECRET, Account, new_account
from .test_multihost import _CLEANUP

pytestmark = pytest.mark.integration

# Small capsules: several fit in the little room these tests give their agents.
SMALL = {"memory_mb": 256, "disk_size_mb": 64}
HOME = "/root"  # commands run as root
MiB = 1 << 20


@dataclass
class Platform:
    agent: AgentProcess
    rpc: AgentClient
    api: httpx.AsyncClient
    user: Account

    @property
    def data_dir(self) -> Path:
        return self.agent.data_dir

    async def create(self) -> httpx.Response:
        return await self.api.post("/v1/capsules", json=SMALL, headers=self.user.h)

    async def created(self) -> str:
        resp = await self.create()
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    async def sh(self, cid: str, script: str) -> str:
        """Run a script in the capsule; it must succeed. Returns its stdout."""
        resp = await self.api.post(
            f"/v1/capsules/{cid}/exec",
            json={"cmd": "sh", "args": ["-c", script], "user": "root", "timeout_sec": 30},
            headers=self.user.h,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["exit_code"] == 0, resp.text
        return str(resp.json()["stdout"])

    async def listed(self) -> dict[str, str]:
        resp = await self.api.get("/v1/capsules", headers=self.user.h)
        assert resp.status_code == 200, resp.text
        return {c["id"]: c["status"] for c in resp.json()}

    async def on_agent(self) -> set[str]:
        listed = await self.rpc.list_sandboxes(pb.ListSandboxesRequest())
        return {sb.sandbox_id for sb in listed.sandboxes}

    async def answers(self, cid: str) -> None:
        """The capsule runs commands and serves its files, read and written."""
        assert await self.sh(cid, f"cat {HOME}/kept") == "kept\n"
        resp = await self.api.post(
            f"/v1/capsules/{cid}/files/read", json={"path": f"{HOME}/kept"}, headers=self.user.h
        )
        assert resp.status_code == 200 and resp.content == b"kept\n", resp.text
        resp = await self.api.post(
            f"/v1/capsules/{cid}/files/write",
            data={"path": f"{HOME}/note"},
            files={"file": ("note", b"still here\n")},
            headers=self.user.h,
        )
        assert resp.status_code == 204, resp.text
        assert await self.sh(cid, f"cat {HOME}/note") == "still here\n"

    async def nothing_left_but(self, kept: set[str]) -> None:
        """The API and the agent hold exactly `kept`, and the host nothing else."""
        assert set(await self.listed()) == kept
        assert await self.on_agent() == kept
        assert leaks(self.data_dir, keep=kept) == []

    async def no_leaks_after_destroying_all(self, seen: set[str]) -> None:
        for cid, status in (await self.listed()).items():
            if status not in ("stopped", "error"):
                resp = await self.api.delete(f"/v1/capsules/{cid}", headers=self.user.h)
                assert resp.status_code == 204, resp.text
        try:
            await wait_for(lambda: not leaks(self.data_dir, seen), 60, what="no leaks")
        except AssertionError as e:
            raise AssertionError(f"{e}: {leaks(self.data_dir, seen)}") from None


StartPlatform = Callable[..., AbstractAsyncContextManager[Platform]]
_agents = itertools.count()


@pytest.fixture
def start_platform(
    tmp_path: Path,
    agent_process: AgentProcess,  # builds the base template these agents copy
    rest_databases: Any,
    request: pytest.FixtureRequest,
) -> StartPlatform:
    """`async with start_platform(data_dir, WRENN_AGENT_X="..."):` an agent of its own on
    `data_dir` (the base template copied in unless there), with a control plane in-process
    over it and a user. On the way out every capsule left is destroyed and the agent stopped."""

    @asynccontextmanager
    async def start(data_dir: Path, **agent_env: str) -> AsyncIterator[Platform]:
        template = data_dir / "templates" / "minimal"
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            await _run("cp", "-a", str(DATA_DIR / "templates" / "minimal"), str(template.parent))
        n = next(_agents)
        agent = AgentProcess(
            data_dir,
            free_port(),
            tmp_path / f"agent-{n}.log",
            env={"WRENN_AGENT_POOL_SIZE": "0", "WRENN_AGENT_BOOT_SNAPSHOTS": "0", **agent_env},
        )
        await asyncio.to_thread(agent.start)
        try:
            database = await rest_databases.get("sqlite", request)
            await _empty_tables(database)
            async with database.sessionmaker() as session, session.begin():
                session.add(User(email="operator@example.com", name="Operator", is_admin=True))
            settings = Settings(
                data_dir=tmp_path / f"controlplane-{n}",
                database_url=database.url,
                jwt_secret=SecretStr(JWT_SECRET),
                migrate_on_start=False,
                agent_address=agent.target,
                agent_secret=SecretStr(SECRET),
                reconcile_interval_sec=0,
            )
            app = create_app(settings, db=database)
            async with (
                AgentClient(agent.target, SECRET) as rpc,
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                    base_url="http://wrenn.test",
                    timeout=120,
                ) as api,
            ):
                try:
                    yield Platform(agent, rpc, api, await new_account(api))
                finally:
                    if agent.proc is not None and agent.proc.poll() is None:
                        for sandbox_id in await _ids(rpc):
                            with contextlib.suppress(grpc.aio.AioRpcError):
                                await rpc.destroy_sandbox(
                                    pb.SandboxRef(sandbox_id=sandbox_id), timeout=60
                                )
        finally:
            await asyncio.to_thread(agent.stop)
            if any((data_dir / "capsules").glob("*/meta.json")):
                # An agent that could not destroy them (a failed test): a short-lived one does.
                await _run(sys.executable, "-c", _CLEANUP, str(data_dir), timeout=300)

    return start


async def _ids(rpc: AgentClient) -> list[str]:
    with contextlib.suppress(grpc.aio.AioRpcError):
        listed = await rpc.list_sandboxes(pb.ListSandboxesRequest(), timeout=30)
        return [sb.sandbox_id for sb in listed.sandboxes]
    return []


async def _run(*argv: str, timeout: float = 120) -> str:
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


def refused(resp: httpx.Response, *words: str) -> None:
    """The documented 503 of a host without room, its message naming what ran out."""
    error = assert_error(resp, 503, "no_hosts_available")
    message = error["message"].lower()
    assert all(w in message for w in words), error


# -- the data dir's disk full ---------------------------------------------------------------

# The template (~0.5 GB) plus room for a few small capsules and a checkpoint.
SMALL_FS_MB = 1024


@pytest.fixture
async def small_fs(tmp_path: Path) -> AsyncIterator[Path]:
    """A data dir on an ext4 filesystem of its own (a loop-mounted sparse image), removed after
    the test with whatever is still mounted below it."""
    image, point = tmp_path / "small-fs.img", tmp_path / "small-fs"
    with open(image, "wb") as f:
        f.truncate(SMALL_FS_MB * MiB)
    await _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    point.mkdir()
    await _run("mount", "-o", "loop", str(image), str(point))
    try:
        yield point
    finally:
        for target in [*_mounts_under(point), str(point)]:
            umount = await asyncio.to_thread(
                subprocess.run, ["umount", target], capture_output=True, timeout=60
            )
            if umount.returncode != 0:
                await _run("umount", "-l", target, timeout=60)
        image.unlink()


def _mounts_under(root: Path) -> list[str]:
    prefix = f"{root}/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def _fill(path: Path, leave_mb: int) -> None:
    """Write `path` until its filesystem has about `leave_mb` MiB free (0: nothing at all)."""
    chunk = b"\0" * MiB
    with open(path, "wb") as f:
        try:
            while shutil.disk_usage(path).free > (leave_mb + 1) * MiB:
                f.write(chunk)
                f.flush()
            if leave_mb == 0:
                for size in (MiB, 4096, 1):
                    while True:
                        f.write(chunk[:size])
                        f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        os.fsync(f.fileno())


async def test_a_full_data_dir_disk_refuses_what_needs_room_and_recovers_when_freed(
    start_platform: StartPlatform, small_fs: Path
) -> None:
    async with start_platform(small_fs, WRENN_AGENT_DISK_RESERVE_MB="0") as p:
        live, paused = await p.created(), await p.created()
        for cid in (live, paused):
            await p.sh(cid, f"echo kept > {HOME}/kept")
        resp = await p.api.post(f"/v1/capsules/{paused}/pause", headers=p.user.h)
        assert resp.status_code == 200, resp.text

        filler = small_fs / "filler"
        await asyncio.to_thread(_fill, filler, 2)

        # A create: refused for the disk, nothing made.
        both = {live, paused}
        refused(await p.create(), "disk")
        await p.nothing_left_but(both)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await p.rpc.create_sandbox(pb.CreateSandboxRequest(memory_mb=256, disk_size_mb=64))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await p.nothing_left_but(both)

        # A pause: its checkpoint does not fit; the capsule keeps running, nothing half-written.
        refused(await p.api.post(f"/v1/capsules/{live}/pause", headers=p.user.h), "disk")
        assert (await p.listed())[live] == "running"
        assert not list((small_fs / "capsules" / live).glob("checkpoint*"))
        await p.answers(live)
        await p.nothing_left_but(both)

        # A snapshot of the paused one: its copy does not fit; it stays paused, no template.
        body = {"sandbox_id": paused, "name": "full-disk"}
        refused(await p.api.post("/v1/snapshots", json=body, headers=p.user.h), "disk")
        assert (await p.listed())[paused] == "paused"
        assert sorted(os.listdir(small_fs / "templates")) == ["minimal"]
        await p.nothing_left_but(both)

        # Room again: the same calls work, with no restart.
        filler.unlink()
        again = await p.created()
        await p.sh(again, f"echo kept > {HOME}/kept")
        resp = await p.api.post(f"/v1/capsules/{live}/pause", headers=p.user.h)
        assert resp.status_code == 200, resp.text
        for cid in (live, paused):
            resp = await p.api.post(f"/v1/capsules/{cid}/resume", headers=p.user.h)
            assert resp.status_code == 200, resp.text
            await p.answers(cid)
        await p.answers(again)
        resp = await p.api.post("/v1/snapshots", json=body, headers=p.user.h)
        assert resp.status_code == 201, resp.text
        await p.no_leaks_after_destroying_all({live, paused, again})


# -- the agent out of file descriptors ----------------------------------------------------


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_an_agent_out_of_file_descriptors_refuses_creates_and_recovers(
    start_platform: StartPlatform, tmp_path: Path
) -> None:
    async with start_platform(tmp_path / "data") as p:
        live = await p.created()
        await p.sh(live, f"echo kept > {HOME}/kept")
        assert p.agent.proc is not None
        pid = p.agent.proc.pid
        await p.on_agent()  # this test's own connection to the agent, made while it can
        limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # No descriptor beyond those open now (a few more are closed meanwhile; what is open
        # stays usable: the control plane's connection, the capsule's agent connections).
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (_open_fds(pid), limits[1]))
        try:
            refused(await p.create(), "open files")
            await p.nothing_left_but({live})
            await p.answers(live)
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        again = await p.created()
        await p.sh(again, f"echo kept > {HOME}/kept")
        await p.answers(again)
        await p.answers(live)
        await p.no_leaks_after_destroying_all({live, again})


# -- memory for capsules reserved, capsule addresses taken ---------------------------------


async def test_memory_reserved_refuses_the_next_capsule_until_one_goes(
    start_platform: StartPlatform, tmp_path: Path
) -> None:
    # Room for two small capsules and not three (the reserve for the host left at 0, so the
    # host's real MemAvailable never refuses: the reservations do).
    room_mb = 2 * SMALL["memory_mb"] + 100
    overcommit = room_mb / resources(tmp_path).memory_mb
    async with start_platform(
        tmp_path / "data",
        WRENN_AGENT_MEMORY_RESERVE_MB="0",
        WRENN_AGENT_MEMORY_OVERCOMMIT=f"{overcommit:.6f}",
    ) as p:
        first, second = await p.created(), await p.created()
        for cid in (first, second):
            await p.sh(cid, f"echo kept > {HOME}/kept")
        refused(await p.create(), "memory")
        await p.nothing_left_but({first, second})
        await p.answers(first)

        # A paused capsule holds no memory: a create fits, and then its resume does not.
        resp = await p.api.post(f"/v1/capsules/{second}/pause", headers=p.user.h)
        assert resp.status_code == 200, resp.text
        third = await p.created()
        refused(await p.api.post(f"/v1/capsules/{second}/resume", headers=p.user.h), "memory")
        assert (await p.listed())[second] == "paused"

        # One destroyed: the resume fits again.
        resp = await p.api.delete(f"/v1/capsules/{third}", headers=p.user.h)
        assert resp.status_code == 204, resp.text
        resp = await p.api.post(f"/v1/capsules/{second}/resume", headers=p.user.h)
        assert resp.status_code == 200, resp.text
        await p.answers(second)
        await p.answers(first)
        await p.no_leaks_after_destroying_all({first, second, third})


async def test_capsule_addresses_taken_refuse_the_next_capsule_until_one_goes(
    start_platform: StartPlatform, tmp_path: Path
) -> None:
    # A /29: two /30 slots, two capsules.
    async with start_platform(tmp_path / "data", WRENN_AGENT_CAPSULE_SUBNET="10.219.77.0/29") as p:
        first, second = await p.created(), await p.created()
        await p.sh(first, f"echo kept > {HOME}/kept")
        refused(await p.create(), "address")
        await p.nothing_left_but({first, second})
        await p.answers(first)

        resp = await p.api.delete(f"/v1/capsules/{second}", headers=p.user.h)
        assert resp.status_code == 204, resp.text
        third = await p.created()
        await p.sh(third, f"echo kept > {HOME}/kept")
        await p.answers(third)
        await p.no_leaks_after_destroying_all({first, second, third})
