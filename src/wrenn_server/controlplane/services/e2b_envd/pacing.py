"""A server stream's pace as envd keeps it: a keepalive when nothing was sent for the interval
the client asked for (`Keepalive-Ping-Interval`, seconds; envd's default 90 s), so proxies and
the SDK's read timeouts never cut an idle stream, and the end of the client's deadline
(`Connect-Timeout-Ms`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import TypeVar, cast

T = TypeVar("T")

KEEPALIVE_HEADER = "keepalive-ping-interval"
DEFAULT_KEEPALIVE_SEC = 90.0
MIN_KEEPALIVE_SEC = 1.0
MAX_KEEPALIVE_SEC = 3600.0


class DeadlinePassed(Exception):
    """The client's deadline for the stream passed."""


class Keepalive:
    """Yielded by `paced` in place of an item when the stream was quiet for the interval."""


KEEPALIVE = Keepalive()
_END = object()


def keepalive_interval(headers: Mapping[str, str]) -> float:
    try:
        asked = float(headers.get(KEEPALIVE_HEADER, ""))
    except ValueError:
        return DEFAULT_KEEPALIVE_SEC
    return min(max(asked, MIN_KEEPALIVE_SEC), MAX_KEEPALIVE_SEC)


async def paced(
    source: AsyncIterable[T], keepalive_sec: float, timeout_ms: float | None
) -> AsyncIterator[T | Keepalive]:
    """`source`'s items, `KEEPALIVE` after each quiet interval, `DeadlinePassed` once
    `timeout_ms` (None: no deadline) is over. The source is read by a task of its own, so
    waiting for the next keepalive never cancels a read halfway."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_ms is None else loop.time() + max(timeout_ms, 0) / 1000
    queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue(maxsize=16)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put((item, None))
        except Exception as e:
            await queue.put((_END, e))
        else:
            await queue.put((_END, None))

    task = asyncio.create_task(pump())
    last = time.monotonic()
    try:
        while True:
            wait = keepalive_sec - (time.monotonic() - last)
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
            try:
                item, error = await asyncio.wait_for(queue.get(), max(wait, 0))
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    raise DeadlinePassed from None
                last = time.monotonic()
                yield KEEPALIVE
                continue
            if item is _END:
                if error is not None:
                    raise error
                return
            last = time.monotonic()
            yield cast(T, item)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
