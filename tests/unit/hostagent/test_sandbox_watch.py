"""SandboxWatch: a watched process's exit is reported once, promptly, through a pidfd or by
polling, and an unwatched one's never. Real processes, killed for real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from wrenn_server.hostagent import reaper

DEADLINE = 5.0


async def _until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not seen in {DEADLINE} s"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("pidfds", [True, False])
async def test_an_exit_is_reported_once(pidfds: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not pidfds:
        monkeypatch.delattr(reaper.os, "pidfd_open", raising=False)
    exits: list[tuple[str, int]] = []
    watch = reaper.SandboxWatch(lambda key, pid: exits.append((key, pid)))
    doomed, spared, unwatched = [
        await asyncio.create_subprocess_exec("sleep", "60") for _ in range(3)
    ]
    try:
        watch.watch("doomed", doomed.pid)
        watch.watch("spared", spared.pid)
        watch.watch("unwatched", unwatched.pid)
        watch.unwatch("unwatched")
        doomed.kill()
        unwatched.kill()
        await _until(lambda: exits, "the exit")
        assert exits == [("doomed", doomed.pid)]
        # Reported, it is no longer watched (nothing could report it again); the other is.
        assert not watch.watching("doomed") and not watch.watching("unwatched")
        assert watch.watching("spared") and spared.returncode is None
    finally:
        watch.close()
        for proc in (doomed, spared, unwatched):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_a_process_gone_before_it_is_watched_is_reported() -> None:
    exits: list[tuple[str, int]] = []
    watch = reaper.SandboxWatch(lambda key, pid: exits.append((key, pid)))
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    try:
        watch.watch("gone", gone.pid)
        await _until(lambda: exits, "the exit")
        assert exits == [("gone", gone.pid)]
    finally:
        watch.close()
