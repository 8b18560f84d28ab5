"""A capsule whose sandbox dies on its own (sandbox_deaths.DeathWatch): sandboxes are real
processes here, killed for real; the runtime around them (runsc's state, teardown) is a stand-in
that records what the watch asks of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.waiting import wait_for
from wrenn_server.hostagent import errors
from wrenn_server.hostagent.capsule import DEAD, PAUSED, RUNNING, Capsule, capsule_dir
from wrenn_server.hostagent.capsule_table import CapsuleTable
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.envd_client import EnvdClient
from wrenn_server.hostagent.network import CapsuleNet
from wrenn_server.hostagent.pool import Pooled, WarmPool
from wrenn_server.hostagent.sandbox_deaths import DeathWatch

from .capsules import a_capsule

ONE = "sb-00000000-0000-4000-8000-000000000001"
CONTROL = "sb-00000000-0000-4000-8000-000000000002"
SHAPE = ("minimal", 1, 256, 1024)


@dataclass
class SandboxRuntime:
    """What DeathWatch asks of a runtime: a sandbox's pid, whether it runs, why it died, and
    its teardown."""

    pids: dict[str, int] = field(default_factory=dict)
    running: bool = True
    torn_down: list[str] = field(default_factory=list)

    async def sandbox_pid(self, capsule: Capsule) -> int | None:
        return self.pids.get(capsule.handle)

    def sandbox_running(self, capsule: Capsule) -> bool:
        return self.running

    def exit_reason(self, capsule: Capsule) -> str:
        return "out of memory"

    async def teardown(self, capsule: Capsule) -> None:
        self.torn_down.append(capsule.sandbox_id)
        capsule.net = None


def new_capsule(settings: AgentSettings, sandbox_id: str, status: str = RUNNING) -> Capsule:
    capsule = a_capsule(
        sandbox_id,
        capsule_dir(settings.capsules_dir, sandbox_id),
        status=status,
        net=CapsuleNet("wrn-x", "wvx", IPv4Address("10.11.0.1"), IPv4Address("10.11.0.2")),
    )
    capsule.dir.mkdir(parents=True)
    return capsule


async def no_discard(pooled: Pooled) -> None:
    raise AssertionError("no pooled capsule here")


async def no_boot() -> Pooled:
    raise AssertionError("the pool is not started")


@dataclass
class Host:
    table: CapsuleTable
    runtime: SandboxRuntime
    watch: DeathWatch
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def boot(self, sandbox_id: str) -> Capsule:
        """A running capsule with a live sandbox process, watched."""
        capsule = new_capsule(self.table.settings, sandbox_id)
        self.table.capsules[sandbox_id] = capsule
        self.table.connect(capsule)
        proc = await asyncio.create_subprocess_exec("sleep", "60")
        self.procs.append(proc)
        self.runtime.pids[capsule.handle] = proc.pid
        self.watch.watch(capsule)
        await wait_for(lambda: self.watch.watching(capsule), 5, interval=0.01, what="the watch")
        return capsule

    async def kill(self, capsule: Capsule) -> None:
        pid = self.runtime.pids[capsule.handle]
        proc = next(p for p in self.procs if p.pid == pid)
        proc.kill()
        await proc.wait()

    async def died(self, capsule: Capsule) -> None:
        await wait_for(
            lambda: capsule.sandbox_id in self.runtime.torn_down,
            5,
            interval=0.01,
            what=f"the teardown of {capsule.sandbox_id}",
        )

    async def settled(self) -> None:
        """Every exit before now has been handled: a control capsule's sandbox killed now is
        handled after them."""
        control = await self.boot(CONTROL)
        await self.kill(control)
        await self.died(control)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    table = CapsuleTable(AgentSettings(data_dir=tmp_path))
    runtime = SandboxRuntime()
    pool = WarmPool(0, SHAPE, no_boot, no_discard)
    watch = DeathWatch(table, runtime, pool, no_discard)  # type: ignore[arg-type]
    watch.start()
    h = Host(table, runtime, watch)
    try:
        yield h
    finally:
        await watch.stop()
        await table.disconnect_all()
        for proc in h.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_sandbox_that_dies_leaves_a_dead_capsule(host: Host) -> None:
    capsule = await host.boot(ONE)
    await host.kill(capsule)
    await host.died(capsule)
    assert capsule.status == DEAD and capsule.exit_reason == "out of memory"
    assert host.runtime.torn_down == [ONE]
    assert ONE not in host.table.clients  # its envd client is closed
    # Kept, as dead, on disk too: a restarted agent reports it the same way.
    assert Capsule.load(capsule.dir).status == DEAD
    # Calls on it are refused, and a call that was in flight says why it failed.
    with pytest.raises(errors.InvalidState, match="is dead: its sandbox stopped"):
        host.table.envd(ONE)
    request = SimpleNamespace(sandbox_id=ONE)
    explained = host.table.explain(request, errors.Unavailable("capsule agent is not reachable"))
    assert isinstance(explained, errors.InvalidState)
    assert "out of memory" in str(explained)
    # Another capsule's failure is left as it is.
    other = errors.Unavailable("x")
    assert host.table.explain(SimpleNamespace(sandbox_id=CONTROL), other) is other


async def test_a_sandbox_the_agent_stops_is_not_a_death(host: Host) -> None:
    """Pause holds the capsule's lock and changes its status before its sandbox exits."""
    capsule = await host.boot(ONE)
    async with host.table.lock(ONE):
        await host.kill(capsule)
        capsule.status = PAUSED
    await host.settled()
    assert capsule.status == PAUSED and host.runtime.torn_down == [CONTROL]


async def test_an_unwatched_sandbox_is_not_a_death(host: Host) -> None:
    capsule = await host.boot(ONE)
    host.watch.unwatch(capsule)  # as destroy does first
    await host.kill(capsule)
    await host.settled()
    assert capsule.status == RUNNING and host.runtime.torn_down == [CONTROL]


async def test_a_sandbox_gone_before_it_is_watched(host: Host, tmp_path: Path) -> None:
    """runsc no longer knows its pid and nothing of it runs: it died during the boot."""
    capsule = new_capsule(host.table.settings, ONE)
    host.table.capsules[ONE] = capsule
    host.runtime.running = False
    host.watch.watch(capsule)
    await host.died(capsule)
    assert capsule.status == DEAD


async def test_a_pooled_sandbox_that_dies_is_discarded(tmp_path: Path) -> None:
    settings = AgentSettings(data_dir=tmp_path)
    discarded: list[str] = []

    async def discard(pooled: Pooled) -> None:
        discarded.append(pooled.capsule.handle)

    pool = WarmPool(1, SHAPE, no_boot, discard)
    capsule = new_capsule(settings, ONE, status="pooled")
    client = EnvdClient("127.0.0.1", 9, "t")
    pool.add(SHAPE, Pooled(capsule, client))
    assert pool.ready_for(SHAPE)
    watch = DeathWatch(CapsuleTable(settings), SandboxRuntime(running=False), pool, discard)  # type: ignore[arg-type]
    watch.start()
    try:
        watch.watch(capsule)
        await wait_for(lambda: discarded, 5, interval=0.01, what="the discard")
        assert discarded == [ONE] and not pool.ready_for(SHAPE)
    finally:
        await watch.stop()
        await client.aclose()
