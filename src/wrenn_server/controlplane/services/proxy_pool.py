"""Kept-alive tunnels of the port proxy: after an HTTP exchange ended cleanly and both sides allow
keep-alive, its tunnel (a gRPC stream through the host agent and envd's connection to the app)
serves the next request to the same port instead of opening a new one.

A kept tunnel is filed under its target (capsule and port) and a generation (the capsule's host
and start time, which a pause and resume change), so nothing opened before a pause is used after
it. While idle, a read is kept pending on it: if the app closes the connection or sends anything,
the read ends and the tunnel is dropped; a taken tunnel's next `recv` returns that read's result.
Idle tunnels are closed after `idle_timeout`, and there are at most `per_target` of them per
target and `total` in all (the oldest go first).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

IDLE_TIMEOUT = 30.0
PER_TARGET = 8
TOTAL = 256
# Methods a client may repeat on its own (RFC 9110 9.2.2): the only ones sent again when a kept
# tunnel turns out to have been closed by the app before it answered a single byte.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

Message = MutableMapping[str, Any]  # an ASGI message
Receive = Callable[[], Awaitable[Message]]


class Keepable(Protocol):
    """What the pool needs of a tunnel."""

    reused: bool

    def read_ahead(self) -> asyncio.Task[bytes]: ...

    def close(self) -> None: ...


T = TypeVar("T", bound=Keepable)


@dataclass(eq=False)
class _Idle(Generic[T]):
    tunnel: T
    watch: asyncio.Task[bytes]
    since: float
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Target(Generic[T]):
    generation: Hashable
    idle: list[_Idle[T]] = field(default_factory=list)  # oldest first


class TunnelPool(Generic[T]):
    def __init__(
        self,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        per_target: int = PER_TARGET,
        total: int = TOTAL,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.per_target = per_target
        self.total = total
        self._targets: dict[Hashable, _Target[T]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def take(self, target: Hashable, generation: Hashable) -> T | None:
        """The most recently kept live tunnel to `target` of this generation, or None. Tunnels
        of another generation (before a pause, on another host) are closed."""
        slot = self._targets.get(target)
        if slot is None:
            return None
        if slot.generation != generation:
            self._drop_target(target)
            return None
        while slot.idle:
            entry = slot.idle.pop()
            self._count -= 1
            self._forget(target, slot)
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.watch.done():  # the app closed it or sent something unasked
                entry.tunnel.close()
                continue
            entry.tunnel.reused = True
            return entry.tunnel
        return None

    def keep(self, target: Hashable, generation: Hashable, tunnel: T) -> None:
        """File a tunnel whose last exchange ended cleanly, for the next request to `target`."""
        slot = self._targets.get(target)
        if slot is not None and slot.generation != generation:
            self._drop_target(target)
            slot = None
        if slot is None:
            slot = self._targets[target] = _Target(generation)
        entry = _Idle(tunnel, tunnel.read_ahead(), time.monotonic())
        slot.idle.append(entry)
        self._count += 1
        entry.watch.add_done_callback(lambda _: self._remove(target, entry))
        entry.timer = asyncio.get_running_loop().call_later(
            self.idle_timeout, self._remove, target, entry
        )
        if len(slot.idle) > self.per_target:
            self._remove(target, slot.idle[0])
        while self._count > self.total:
            oldest = min(
                ((t, s.idle[0]) for t, s in self._targets.items() if s.idle),
                key=lambda pair: pair[1].since,
            )
            self._remove(*oldest)

    def drop(self, target: Hashable) -> None:
        """Close every idle tunnel to `target`."""
        self._drop_target(target)

    def close(self) -> None:
        """Close every idle tunnel (the application is stopping)."""
        for target in list(self._targets):
            self._drop_target(target)

    def _remove(self, target: Hashable, entry: _Idle[T]) -> None:
        """An idle tunnel closed and forgotten, if it is still idle here."""
        if not entry.watch.cancelled() and entry.watch.done():
            entry.watch.exception()  # retrieved: its end is why the tunnel goes
        slot = self._targets.get(target)
        if slot is None or entry not in slot.idle:
            return
        slot.idle.remove(entry)
        self._count -= 1
        self._forget(target, slot)
        if entry.timer is not None:
            entry.timer.cancel()
        entry.tunnel.close()

    def _drop_target(self, target: Hashable) -> None:
        slot = self._targets.get(target)
        while slot is not None and slot.idle:
            self._remove(target, slot.idle[0])
        self._targets.pop(target, None)

    def _forget(self, target: Hashable, slot: _Target[T]) -> None:
        if not slot.idle and self._targets.get(target) is slot:
            del self._targets[target]


class Replay:
    """The caller's `receive`, remembering the request's messages while they carry no body
    bytes, so a request that has not sent any can be sent again on another tunnel."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._seen: list[Message] = []
        self._queued: list[Message] = []
        self.replayable = True

    async def __call__(self) -> Message:
        if self._queued:
            return self._queued.pop(0)
        message = await self._receive()
        if message["type"] == "http.request" and self.replayable:
            if message.get("body"):
                self.replayable = False
                self._seen.clear()
            else:
                self._seen.append(message)
        return message

    def rewind(self) -> None:
        """The remembered messages are received again, then the caller's own."""
        self._queued = list(self._seen)
