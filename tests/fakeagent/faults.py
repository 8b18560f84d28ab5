"""Faults a test injects into the fake agent: every call unavailable, one method failing the next
N times with a status code, calls held until the test lets them go (before they do anything, or
after they did it and before they answer), a fixed delay."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from .errors import Refused


@dataclass
class Hold:
    """Calls of one method wait at their start until `release()`; `arrived` says one has."""

    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


class Faults:
    def __init__(self) -> None:
        # Every call answers UNAVAILABLE, as an agent that cannot be reached does.
        self.unavailable = False
        self._failures: dict[str, list[Refused]] = {}
        self._holds: dict[str, Hold] = {}
        self._replies: dict[str, Hold] = {}
        self._delays: dict[str, float] = {}

    def fail(
        self,
        method: str,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        message: str = "injected failure",
        times: int = 1,
    ) -> None:
        """The next `times` calls of `method` fail with `code`, doing nothing."""
        self._failures.setdefault(method, []).extend(Refused(code, message) for _ in range(times))

    def hold(self, method: str) -> Hold:
        hold = self._holds[method] = Hold()
        return hold

    def hold_reply(self, method: str) -> Hold:
        """Calls of `method` do their work, then wait to answer until released."""
        hold = self._replies[method] = Hold()
        return hold

    def delay(self, method: str, seconds: float) -> None:
        self._delays[method] = seconds

    def clear(self) -> None:
        self.unavailable = False
        self._failures.clear()
        for hold in (*self._holds.values(), *self._replies.values()):
            hold.release()
        self._holds.clear()
        self._replies.clear()
        self._delays.clear()

    async def before(self, method: str) -> None:
        """Run at the start of every call, after authentication."""
        if self.unavailable:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "agent unavailable")
        queued = self._failures.get(method)
        if queued:
            raise queued.pop(0)
        if (hold := self._holds.get(method)) is not None:
            hold.arrived.set()
            await hold.released.wait()
        if (seconds := self._delays.get(method)) is not None:
            await asyncio.sleep(seconds)

    async def after(self, method: str) -> None:
        """Run when a unary call has done its work, before it answers."""
        if (hold := self._replies.get(method)) is not None:
            hold.arrived.set()
            await hold.released.wait()
