"""A server stream's pace as envd keeps it: a keepalive when nothing was sent for the interval
the client asked for (`Keepalive-Ping-Interval`, seconds; envd's default 90 s), so proxies and
the SDK's read timeouts never cut an idle stream, and the end of the client's deadline
(`Connect-Timeout-Ms`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Protocol, TypeVar, cast

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

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
    source: AsyncIterable[T],
    keepalive_sec: float,
    timeout_ms: float | None,
    gone: asyncio.Event | None = None,
) -> AsyncIterator[T | Keepalive]:
    """`source`'s items, `KEEPALIVE` after each quiet interval, `DeadlinePassed` once
    `timeout_ms` (None: no deadline) is over; the end as soon as `gone` is set (the client
    left: a quiet stream would otherwise be noticed only at its next message). The source is
    read by a task of its own, so waiting never cancels a read halfway."""
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
    left = asyncio.create_task((gone or asyncio.Event()).wait())
    getting: asyncio.Task[tuple[object, BaseException | None]] | None = None
    last = loop.time()
    try:
        while True:
            wait = keepalive_sec - (loop.time() - last)
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
            getting = getting or asyncio.create_task(queue.get())
            await asyncio.wait({getting, left}, timeout=max(wait, 0), return_when="FIRST_COMPLETED")
            if left.done():
                return
            if not getting.done():
                if deadline is not None and loop.time() >= deadline:
                    raise DeadlinePassed
                last = loop.time()
                yield KEEPALIVE
                continue
            (item, error), getting = getting.result(), None
            if item is _END:
                if error is not None:
                    raise error
                return
            last = loop.time()
            yield cast(T, item)
    finally:
        for pending in (task, left, getting):
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending


class _Readable(Protocol[T_co]):
    async def read(self) -> T_co | object: ...


async def messages(call: _Readable[T_co], kind: type[T_co]) -> AsyncIterator[T_co]:
    """A gRPC stream's remaining messages by `read()` (a call read once that way cannot be
    iterated any more)."""
    while True:
        message = await call.read()
        if not isinstance(message, kind):  # grpc.aio.EOF
            return
        yield message
