"""The agent's room check against this machine's real CPUs, memory and disk: vCPUs beyond the
CPUs, memory limits adding up beyond total x overcommit less the reserve, and disks beyond the
free space are refused; paused capsules hold nothing, boots and resumes in flight do, and idle
pooled capsules give way (only to a capsule someone asked for). End to end, with real capsules:
tests/integration/test_placement.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wrenn_server.hostagent import errors
from wrenn_server.hostagent.capacity import (
    Room,
    check_checkpoint_room,
    memory_limit_mb,
    resources,
)
from wrenn_server.hostagent.capsule import PAUSED, RUNNING, STARTING, Capsule, new_sandbox_id
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.envd_client import EnvdClient
from wrenn_server.hostagent.pool import Pooled, WarmPool

from .capsules import a_capsule

SHAPE = ("minimal", 1, 512, 1024)


def _capsule(tmp_path: Path, memory_mb: int, status: str = RUNNING) -> Capsule:
    sandbox_id = new_sandbox_id()
    return a_capsule(sandbox_id, tmp_path / sandbox_id, memory_mb=memory_mb, status=status)


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[WarmPool]:
    """A warm pool of two idle 512 MiB capsules (records only: no sandbox behind them)."""
    discarded: list[Pooled] = []

    async def boot(_shape: object) -> Pooled:
        return Pooled(_capsule(tmp_path, 512, "pooled"), EnvdClient("127.0.0.1", 9, "t"))

    async def discard(pooled: Pooled) -> None:
        discarded.append(pooled)
        await pooled.client.aclose()

    warm = WarmPool(2, SHAPE, boot, discard)
    warm.start()
    deadline = time.monotonic() + 10
    while warm.held_mb() < 1024:
        assert time.monotonic() < deadline, "the pool did not fill"
        await asyncio.sleep(0.01)
    yield warm
    await warm.stop()


def _settings(tmp_path: Path, **values: object) -> AgentSettings:
    return AgentSettings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def _left(settings: AgentSettings) -> int:
    """Memory capsules may still reserve on this machine with nothing held."""
    return memory_limit_mb(settings, resources(settings.data_dir).memory_mb)


async def test_memory_is_counted_by_what_live_capsules_reserve(tmp_path: Path) -> None:
    settings = _settings(tmp_path, memory_reserve_mb=1000)
    idle = WarmPool(0, SHAPE, _never, _never_discard)
    capsules = {
        c.sandbox_id: c for c in (_capsule(tmp_path, 3000), _capsule(tmp_path, 9999, PAUSED))
    }
    room = Room(settings, capsules, idle)
    free = _left(settings) - 3000
    assert room.held_mb() == 3000
    assert room.make_room(vcpus=1, memory_mb=free, disk_mb=None) == []
    with pytest.raises(errors.ResourceExhausted, match=f"{free} MiB of memory left"):
        room.make_room(vcpus=1, memory_mb=free + 1, disk_mb=None)

    # A boot or a resume in flight holds its memory before its status says so.
    starting = _capsule(tmp_path, 1000, STARTING)
    with room.claim(starting):
        assert room.held_mb() == 4000
        with pytest.raises(errors.ResourceExhausted):
            room.make_room(vcpus=1, memory_mb=free - 999, disk_mb=None)
    assert room.held_mb() == 3000

    # Overcommitted twice, the host promises twice its memory.
    doubled = Room(
        _settings(tmp_path, memory_reserve_mb=1000, memory_overcommit=2.0), capsules, idle
    )
    assert doubled.make_room(vcpus=1, memory_mb=free + 1, disk_mb=None) == []


async def test_cpus_and_disk(tmp_path: Path) -> None:
    settings = _settings(tmp_path, disk_reserve_mb=0)
    room = Room(settings, {}, WarmPool(0, SHAPE, _never, _never_discard))
    have = resources(tmp_path)
    room.make_room(vcpus=have.cpu_count, memory_mb=64, disk_mb=None)
    with pytest.raises(errors.ResourceExhausted, match=f"{have.cpu_count} CPUs"):
        room.make_room(vcpus=have.cpu_count + 1, memory_mb=64, disk_mb=None)
    room.make_room(vcpus=1, memory_mb=64, disk_mb=1024)
    with pytest.raises(errors.ResourceExhausted, match="disk free"):
        room.make_room(vcpus=1, memory_mb=64, disk_mb=have.disk_free_mb + 1024)
    # The reserve is kept free: a disk that would eat into it does not fit.
    greedy = Room(_settings(tmp_path, disk_reserve_mb=have.disk_free_mb), {}, room.pool)
    with pytest.raises(errors.ResourceExhausted, match="0 MiB of disk free"):
        greedy.make_room(vcpus=1, memory_mb=64, disk_mb=64)
    # A resume needs no new disk.
    greedy.make_room(vcpus=1, memory_mb=64, disk_mb=None)


async def test_idle_pooled_capsules_give_way(tmp_path: Path, pool: WarmPool) -> None:
    settings = _settings(tmp_path)
    room = Room(settings, {}, pool)
    free = _left(settings) - 1024
    assert room.held_mb() == 1024

    # More than the pool could free: refused, and the pool keeps both.
    with pytest.raises(errors.ResourceExhausted):
        room.make_room(vcpus=1, memory_mb=free + 1025, disk_mb=None)
    assert pool.held_mb() == 1024
    # The pool does not evict itself.
    with pytest.raises(errors.ResourceExhausted):
        room.make_room(vcpus=1, memory_mb=free + 1, disk_mb=None, evict=False)
    # One pooled capsule is enough room, so one goes (checked before the pool, which refills
    # when the host has room, gets to run).
    evicted = room.make_room(vcpus=1, memory_mb=free + 1, disk_mb=None)
    assert len(evicted) == 1 and pool.held_mb() == 512
    for pooled in evicted:
        await pooled.client.aclose()


async def _never() -> Pooled:
    raise AssertionError("this pool never boots")


async def _never_discard(_pooled: Pooled) -> None:
    raise AssertionError("this pool holds nothing")


def test_a_pause_is_refused_when_its_memory_image_would_not_fit(tmp_path: Path) -> None:
    """Without a cgroup to read (no sandbox here) the image is taken to be the capsule's whole
    memory: one that fits the data dir's free space passes, one that does not is refused
    before runsc is asked (a checkpoint failing for room stops the sandbox)."""
    settings = _settings(tmp_path)
    check_checkpoint_room(settings, _capsule(tmp_path, 64))
    free_mb = resources(tmp_path).disk_free_mb
    with pytest.raises(errors.ResourceExhausted, match="disk is full"):
        check_checkpoint_room(settings, _capsule(tmp_path, free_mb + 1024))
