"""Waiting for something to happen: poll a condition until it holds or a deadline passes, so a
test neither sleeps a guessed time (slow, and flaky under load) nor waits forever."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def wait_for(
    condition: Callable[[], Awaitable[T]],
    timeout: float = ...,
    *,
    interval: float = ...,
    what: str = ...,
) -> T: ...
@overload
async def wait_for(
    condition: Callable[[], T], timeout: float = ..., *, interval: float = ..., what: str = ...
) -> T: ...
async def wait_for(
    condition: Callable[[], Any],
    timeout: float = 30,
    *,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Return `condition()`'s (plain or async) first true value; fail the test after `timeout`
    seconds. The condition is checked once more at the deadline, so a slow poll still counts."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(interval)


def wait_until(
    condition: Callable[[], T],
    timeout: float = 30,
    *,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """`wait_for` for synchronous tests."""
    deadline = time.monotonic() + timeout
    while True:
        if result := condition():
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(interval)
