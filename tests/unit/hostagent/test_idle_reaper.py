"""The TTL reaper (idle_reaper.IdleReaper): which capsules it pauses, and what it does when a
pause fails. The lifecycle it drives is a stand-in recording the calls."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.waiting import wait_for
from wrenn_server.hostagent import errors
from wrenn_server.hostagent.capsule import PAUSED, RUNNING, Capsule
from wrenn_server.hostagent.idle_reaper import IdleReaper

from .capsules import a_capsule

_ids = (f"sb-00000000-0000-4000-8000-{n:012x}" for n in range(1, 1000))


@dataclass
class Lifecycle:
    capsules: dict[str, Capsule] = field(default_factory=dict)
    paused: list[tuple[str, bool]] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    pause_error: Exception | None = None
    # Requests and streams open to each capsule's envd.
    open_requests: dict[str, int] = field(default_factory=dict)

    async def pause(self, sandbox_id: str, auto: bool = False) -> Capsule:
        if self.pause_error is not None:
            raise self.pause_error
        self.paused.append((sandbox_id, auto))
        capsule = self.capsules[sandbox_id]
        capsule.status = PAUSED
        return capsule

    async def destroy(self, sandbox_id: str) -> None:
        self.destroyed.append(sandbox_id)
        del self.capsules[sandbox_id]

    def in_use(self, sandbox_id: str) -> int:
        return self.open_requests.get(sandbox_id, 0)

    def add(self, *, timeout_sec: int, idle_for: float, status: str = RUNNING) -> str:
        sandbox_id = next(_ids)
        self.capsules[sandbox_id] = a_capsule(
            sandbox_id,
            Path("/nonexistent"),
            timeout_sec=timeout_sec,
            status=status,
            last_active_at=time.time() - idle_for,
        )
        return sandbox_id


@pytest.fixture
def lifecycle() -> Lifecycle:
    return Lifecycle()


async def test_pauses_only_running_capsules_idle_past_their_timeout(lifecycle: Lifecycle) -> None:
    idle = lifecycle.add(timeout_sec=10, idle_for=11)
    lifecycle.add(timeout_sec=10, idle_for=9)  # active recently
    lifecycle.add(timeout_sec=0, idle_for=3600)  # no timeout
    lifecycle.add(timeout_sec=10, idle_for=3600, status=PAUSED)
    await IdleReaper(lifecycle, 60).reap_idle()
    assert lifecycle.paused == [(idle, True)]  # reported as auto-paused
    assert lifecycle.destroyed == []


async def test_a_capsule_with_a_command_still_running_is_not_idle(lifecycle: Lifecycle) -> None:
    """A command longer than the timeout (its exec or stream open all along) is not paused
    under it; the quiet period starts again from the pass that saw it open."""
    busy = lifecycle.add(timeout_sec=10, idle_for=3600)
    lifecycle.open_requests[busy] = 1
    reaper = IdleReaper(lifecycle, 60)
    await reaper.reap_idle()
    assert lifecycle.paused == []
    lifecycle.open_requests[busy] = 0
    await reaper.reap_idle()
    assert lifecycle.paused == []  # idle for less than 10 s since
    lifecycle.capsules[busy].last_active_at -= 11
    await reaper.reap_idle()
    assert lifecycle.paused == [(busy, True)]


async def test_a_capsule_no_longer_running_is_left_alone(lifecycle: Lifecycle) -> None:
    lifecycle.add(timeout_sec=1, idle_for=5)
    lifecycle.pause_error = errors.InvalidState("sandbox is paused, not running")
    await IdleReaper(lifecycle, 60).reap_idle()
    assert lifecycle.destroyed == []


async def test_a_capsule_that_cannot_be_paused_is_destroyed(lifecycle: Lifecycle) -> None:
    """Left running, it would hold its memory past its timeout for good."""
    stuck = lifecycle.add(timeout_sec=1, idle_for=5)
    lifecycle.pause_error = errors.Internal()
    await IdleReaper(lifecycle, 60).reap_idle()
    assert lifecycle.destroyed == [stuck]


async def test_it_keeps_reaping_every_interval(lifecycle: Lifecycle) -> None:
    reaper = IdleReaper(lifecycle, 0.01)
    task = asyncio.create_task(reaper.run())
    try:
        first = lifecycle.add(timeout_sec=1, idle_for=5)
        await wait_for(lambda: lifecycle.paused, 5, interval=0.01, what="the first pause")
        second = lifecycle.add(timeout_sec=1, idle_for=5)
        await wait_for(lambda: len(lifecycle.paused) == 2, 5, interval=0.01, what="the second")
        assert lifecycle.paused == [(first, True), (second, True)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
