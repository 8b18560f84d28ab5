"""Warm pool: capsules of the default shape booted ahead of demand, so that creating one is a
hand-over (a few ms) instead of a boot (~400 ms under gVisor). Each idle pooled capsule costs
what any idle capsule costs (see docs/performance.md); `pool_size` 0 turns the pool off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import errors
from .capsule import Capsule
from .envd_client import EnvdClient

log = logging.getLogger(__name__)

Shape = tuple[str, int, int, int]  # template, vcpus, memory_mb, disk_size_mb


@dataclass
class Pooled:
    capsule: Capsule
    client: EnvdClient


class WarmPool:
    def __init__(
        self,
        size: int,
        shape: Shape,
        boot: Callable[[], Awaitable[Pooled]],
        discard: Callable[[Pooled], Awaitable[None]],
    ) -> None:
        self.size = size
        self.shape = shape
        self._boot = boot
        self._discard = discard
        self._ready: list[Pooled] = []
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.size > 0:
            self._task = asyncio.create_task(self._fill_forever(), name="warm-pool")
            self._wanted.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        ready, self._ready = self._ready, []
        for pooled in ready:
            await self._discard(pooled)

    def take(self, shape: Shape) -> Pooled | None:
        if shape != self.shape or not self._ready:
            return None
        pooled = self._ready.pop()
        self._wanted.set()
        return pooled

    def drop(self, handle: str) -> Pooled | None:
        """Take a ready capsule out of the pool (its sandbox died): it is the caller's to
        discard, and a new one is booted in its place."""
        for pooled in self._ready:
            if pooled.capsule.handle == handle:
                self._ready.remove(pooled)
                self._wanted.set()
                return pooled
        return None

    def ready_for(self, shape: Shape) -> bool:
        """Whether `take(shape)` would hand a capsule over."""
        return shape == self.shape and bool(self._ready)

    def held_mb(self) -> int:
        """Memory reserved by the idle pooled capsules."""
        return sum(p.capsule.memory_mb for p in self._ready)

    def evict(self) -> Pooled | None:
        """Take an idle capsule out to make room for one someone asked for (the caller discards
        it); the pool refills when the host has room again."""
        if not self._ready:
            return None
        self._wanted.set()
        return self._ready.pop(0)

    async def _fill_forever(self) -> None:
        failures = 0
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while len(self._ready) < self.size:
                try:
                    self._ready.append(await self._boot())
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except errors.ResourceExhausted as e:
                    # The host is full: retry later, quietly (it is not a fault).
                    failures += 1
                    log.info("warm pool: not refilled: %s", e)
                    await asyncio.sleep(min(60.0, 2.0**failures))
                except Exception:
                    failures += 1
                    log.exception("warm pool: boot failed")
                    await asyncio.sleep(min(60.0, 2.0**failures))
