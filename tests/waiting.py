"""Waiting for something to happen: poll a condition until it holds or a deadline passes, so a
test neither sleeps a guessed time (slow, and flaky under load) nor waits forever."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 30,
    *,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Return once `condition()` (plain or async) is true; fail the test after `timeout` seconds.
    The condition is checked once more after the deadline, so a slow poll still counts."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(interval)
