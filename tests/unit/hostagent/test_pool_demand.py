"""The warm pool adapts to demand (pool_demand.Demand, WarmPool) on a fake clock: a shape gets
as many ready capsules as were created of it over the window, one while it was created within
the quiet period, none after; the default shape keeps its floor; all shapes share the total cap
by demand; surplus capsules drain, the least wanted are evicted first, capsules of a replaced
template are not handed over; and a create is never refused for room a pooled boot holds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from wrenn_server.hostagent import errors
from wrenn_server.hostagent.capacity import Room, memory_limit_mb, resources
from wrenn_server.hostagent.capsule import POOLED, new_sandbox_id
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.envd_client import EnvdClient
from wrenn_server.hostagent.pool import Pooled, Shape, WarmPool
from wrenn_server.hostagent.pool_demand import MAX_SHAPES, Demand

from .capsules import a_capsule

DEFAULT: Shape = ("minimal", 1, 512, 5120)
SMALL: Shape = ("minimal", 1, 256, 1024)
BIG: Shape = ("minimal", 2, 1024, 5120)
CUSTOM: Shape = ("custom", 1, 512, 5120)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_shape_gets_what_was_created_of_it_lately_then_drains() -> None:
    demand = Demand(DEFAULT, floor=1, total=8, window_sec=60, idle_sec=300)
    assert demand.targets(0) == {DEFAULT: 1}
    demand.record(SMALL, 0)
    assert demand.targets(1) == {DEFAULT: 1, SMALL: 1}
    demand.record(SMALL, 10)
    demand.record(SMALL, 20)
    assert demand.targets(30) == {DEFAULT: 1, SMALL: 3}
    # The first create leaves the window at 60 s, the others at 70 and 80.
    assert demand.targets(60) == {DEFAULT: 1, SMALL: 2}
    # Out of the window, still in demand: one kept until the quiet period has passed.
    assert demand.targets(80) == {DEFAULT: 1, SMALL: 1}
    assert demand.targets(319) == {DEFAULT: 1, SMALL: 1}
    assert demand.targets(320) == {DEFAULT: 1}
    # A burst of the default shape grows it beyond its floor, and back.
    for t in (400, 401, 402):
        demand.record(DEFAULT, t)
    assert demand.targets(403) == {DEFAULT: 3}
    assert demand.targets(462) == {DEFAULT: 1}


def test_shapes_share_the_cap_by_demand() -> None:
    demand = Demand(DEFAULT, floor=1, total=3, window_sec=60, idle_sec=300)
    for t in (0, 1, 2, 3, 4):
        demand.record(BIG, t)
    demand.record(SMALL, 5)
    demand.record(SMALL, 6)
    demand.record(CUSTOM, 7)
    # The floor first, then one each by demand (BIG: 5 creates, SMALL: 2, CUSTOM: 1) while
    # the cap allows, then a second each.
    assert demand.targets(8) == {DEFAULT: 1, BIG: 1, SMALL: 1}
    demand.total = 6
    assert demand.targets(8) == {DEFAULT: 1, BIG: 2, SMALL: 2, CUSTOM: 1}
    demand.total = 3
    assert sum(Demand(DEFAULT, 1, 0, 60, 300).targets(0).values()) == 1  # cap below the floor
    # A deleted template's shapes are forgotten.
    demand.forget("minimal")
    assert demand.targets(9) == {DEFAULT: 1, CUSTOM: 1}


def test_shapes_remembered_are_bounded() -> None:
    demand = Demand(DEFAULT, floor=1, total=64, window_sec=60, idle_sec=300)
    for i in range(MAX_SHAPES + 10):
        demand.record(("minimal", 1, 64 + i, 1024), float(i))
    targets = demand.targets(100)
    assert len(targets) == 1 + MAX_SHAPES - 1  # the default and the newest of the rest
    assert ("minimal", 1, 64, 1024) not in targets  # the stalest went first


def _pooled(tmp_path: Path, shape: Shape, template_at: float = 0.0) -> Pooled:
    sandbox_id = new_sandbox_id()
    capsule = a_capsule(
        sandbox_id,
        tmp_path / sandbox_id,
        template=shape[0],
        vcpus=shape[1],
        memory_mb=shape[2],
        disk_size_mb=shape[3],
        status=POOLED,
    )
    return Pooled(capsule, EnvdClient("127.0.0.1", 9, "t"), template_at)


async def _no_boot(_shape: Shape) -> Pooled:
    raise AssertionError("booted by hand in this test")


async def _no_discard(_pooled: Pooled) -> None:
    raise AssertionError("discarded by hand in this test")


async def test_the_pool_fills_hands_over_drains_and_evicts(tmp_path: Path) -> None:
    clock = Clock()
    pool = WarmPool(
        1, DEFAULT, _no_boot, _no_discard, total=3, window_sec=60, idle_sec=300, clock=clock
    )
    assert pool.next_step() == DEFAULT
    pool.add(DEFAULT, _pooled(tmp_path, DEFAULT))
    assert pool.next_step() is None
    assert not pool.ready_for(SMALL)

    # A create of a shape not pooled: it boots, and the pool boots one like it.
    pool.record(SMALL)
    assert pool.take(SMALL) is None
    assert pool.next_step() == SMALL
    small = _pooled(tmp_path, SMALL)
    pool.add(SMALL, small)
    assert pool.next_step() is None
    # The next create of it is handed over and the pool boots another.
    clock.now += 10
    pool.record(SMALL)
    assert pool.take(SMALL) is small
    assert pool.next_step() == SMALL
    pool.add(SMALL, _pooled(tmp_path, SMALL))
    pool.add(SMALL, _pooled(tmp_path, SMALL))
    assert pool.held_mb() == 512 + 2 * 256

    # Room is needed: the least wanted go first (both SMALLs are wanted while in the window,
    # the default shape once).
    evicted = pool.evict()
    assert evicted is not None and evicted.capsule.memory_mb == 512
    pool.add(DEFAULT, evicted)
    # Out of the window: SMALL wants one, so one is surplus and drains.
    clock.now += 60
    surplus = pool.next_step()
    assert isinstance(surplus, Pooled) and surplus.capsule.memory_mb == 256
    assert pool.next_step() is None
    # A quiet period without SMALL: it drains to nothing, the default shape stays.
    clock.now += 300
    last = pool.next_step()
    assert isinstance(last, Pooled) and last.capsule.memory_mb == 256
    assert pool.next_step() is None and not pool.ready_for(SMALL) and pool.ready_for(DEFAULT)
    for pooled in (small, evicted, surplus, last):
        await pooled.client.aclose()


async def test_capsules_of_a_replaced_template_are_not_handed_over(tmp_path: Path) -> None:
    pool = WarmPool(1, CUSTOM, _no_boot, _no_discard, total=2, clock=Clock())
    old, new = _pooled(tmp_path, CUSTOM, 1.0), _pooled(tmp_path, CUSTOM, 2.0)
    pool.add(CUSTOM, old)
    pool.add(CUSTOM, new)
    assert pool.drop_template("custom", keep_at=2.0) == [old]
    assert pool.take(CUSTOM) is new
    pool.record(CUSTOM)
    pool.add(CUSTOM, old)
    # Deleted: every capsule of it goes, and so does the demand for it (the floor stays).
    assert pool.drop_template("custom") == [old]
    assert pool.demand.targets(pool.clock()) == {CUSTOM: 1}
    for pooled in (old, new):
        await pooled.client.aclose()


async def test_the_pool_adapts_on_its_own(tmp_path: Path) -> None:
    """The fill loop: a create of a new shape is followed by a ready capsule of it; after the
    quiet period on the clock it is discarded."""
    clock = Clock()
    discarded: list[Shape] = []

    async def boot(shape: Shape) -> Pooled:
        return _pooled(tmp_path, shape)

    async def discard(pooled: Pooled) -> None:
        discarded.append(pooled.capsule.shape)
        await pooled.client.aclose()

    pool = WarmPool(1, DEFAULT, boot, discard, total=2, window_sec=1, idle_sec=2, clock=clock)
    pool.start()
    try:
        await _until(lambda: pool.ready_for(DEFAULT))
        pool.record(SMALL)
        await _until(lambda: pool.ready_for(SMALL))
        clock.now += 2
        await _until(lambda: discarded == [SMALL])  # at the next look (pool.interval)
        assert pool.ready_for(DEFAULT) and not pool.ready_for(SMALL)
    finally:
        await pool.stop()
    assert discarded == [SMALL, DEFAULT]


async def _until(cond: object, timeout: float = 10.0) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the pool did not get there"
        await asyncio.sleep(0.01)


def test_a_pooled_boot_in_flight_gives_way_to_a_create(tmp_path: Path) -> None:
    settings = AgentSettings(data_dir=tmp_path)
    pool = WarmPool(1, DEFAULT, _no_boot, _no_discard)
    room = Room(settings, {}, pool)
    left = memory_limit_mb(settings, resources(tmp_path).memory_mb)
    booting = _pooled(tmp_path, DEFAULT).capsule
    with room.claim(booting, pooled=True):
        # All the room but the pooled boot's: the create goes ahead, and the pool's capsule
        # does not fit any more once booted (the pool then discards it).
        room.make_room(vcpus=1, memory_mb=left - 100, disk_mb=None)
        room.claims["create"] = left - 100
        assert room.over_limit()
        del room.claims["create"]
        assert not room.over_limit()
    # A resume in flight does not give way: it is someone's capsule.
    with room.claim(booting), pytest.raises(errors.ResourceExhausted):
        room.make_room(vcpus=1, memory_mb=left - 100, disk_mb=None)
