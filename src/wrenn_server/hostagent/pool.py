"""Warm pool: capsules booted ahead of demand, so that creating one is a hand-over (a few ms)
instead of a boot (~400 ms under gVisor). It keeps `pool_size` of the default shape, and adapts
to the creates it sees (pool_demand.py): capsules of the shapes asked for lately, up to
`pool_max` in all; shapes nobody asks for any more drain back to nothing. Idle pooled capsules
doze like any idle capsule (doze.py) and give way to a capsule someone asked for (capacity.py);
`pool_size` 0 turns the pool off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from . import errors
from .capsule import Capsule
from .envd_client import EnvdClient
from .pool_demand import Demand, Shape

log = logging.getLogger(__name__)

__all__ = ["Pooled", "Shape", "WarmPool"]


@dataclass
class Pooled:
    capsule: Capsule
    client: EnvdClient
    template_at: float = 0.0  # the template's created_at when it was booted


class WarmPool:
    def __init__(
        self,
        size: int,
        shape: Shape,
        boot: Callable[[Shape], Awaitable[Pooled]],
        discard: Callable[[Pooled], Awaitable[None]],
        *,
        total: int = 0,
        window_sec: float = 60.0,
        idle_sec: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.shape = shape
        self.demand = Demand(shape, size, total, window_sec, idle_sec)
        self.clock = clock
        self._boot = boot
        self._discard = discard
        self._ready: dict[Shape, list[Pooled]] = {}
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        """How often the targets are looked at without a create (shapes drain over time)."""
        return min(5.0, max(0.5, self.demand.window_sec / 4))

    def start(self) -> None:
        if self.size > 0:
            self._task = asyncio.create_task(self._fill_forever(), name="warm-pool")
            self._wanted.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        ready, self._ready = list(self.capsules_ready()), {}
        # All at once: each is a sandbox to stop, and the agent's stop waits for them.
        results = await asyncio.gather(*map(self._discard, ready), return_exceptions=True)
        for pooled, result in zip(ready, results, strict=True):
            if isinstance(result, BaseException):
                log.error("warm pool: discarding %s failed: %r", pooled.capsule.handle, result)

    def record(self, shape: Shape) -> None:
        """A capsule of `shape` is being created: demand the pool adapts to."""
        if self.size > 0:
            self.demand.record(shape, self.clock())
            self._wanted.set()

    def take(self, shape: Shape) -> Pooled | None:
        ready = self._ready.get(shape)
        if not ready:
            return None
        pooled = ready.pop()
        self._wanted.set()
        return pooled

    def drop(self, handle: str) -> Pooled | None:
        """Take a ready capsule out of the pool (its sandbox died): it is the caller's to
        discard, and a new one is booted in its place."""
        for ready in self._ready.values():
            for pooled in ready:
                if pooled.capsule.handle == handle:
                    ready.remove(pooled)
                    self._wanted.set()
                    return pooled
        return None

    def drop_template(self, name: str, keep_at: float | None = None) -> list[Pooled]:
        """Take out the ready capsules of template `name` (all of them, or those booted from
        another version than `keep_at`): the caller discards them. With `keep_at` None the
        template is gone, and so is the demand for it."""
        if keep_at is None:
            self.demand.forget(name)
        out = []
        for shape, ready in self._ready.items():
            if shape[0] == name:
                out += [p for p in ready if p.template_at != keep_at]
                ready[:] = [p for p in ready if p.template_at == keep_at]
        if out:
            self._wanted.set()
        return out

    def ready_for(self, shape: Shape) -> bool:
        """Whether `take(shape)` would hand a capsule over."""
        return bool(self._ready.get(shape))

    def capsules_ready(self) -> Iterator[Pooled]:
        for ready in self._ready.values():
            yield from ready

    def held_mb(self) -> int:
        """Memory reserved by the idle pooled capsules."""
        return sum(p.capsule.memory_mb for p in self.capsules_ready())

    def evict(self) -> Pooled | None:
        """Take an idle capsule out to make room for one someone asked for (the caller discards
        it): of the shape furthest over its target, then the least wanted; the pool refills
        when the host has room again."""
        return self._surplus(self.demand.targets(self.clock()), evicting=True)

    def _surplus(self, targets: dict[Shape, int], evicting: bool) -> Pooled | None:
        held = [(s, r) for s, r in self._ready.items() if r]
        over = [(len(r) - targets.get(s, 0), -targets.get(s, 0), s, r) for s, r in held]
        if not over:
            return None
        excess, _, _, ready = max(over)
        if excess <= 0 and not evicting:
            return None
        self._wanted.set()
        return ready.pop(0)  # the oldest

    def next_step(self) -> Pooled | Shape | None:
        """What the pool should do now: a ready capsule to discard (its shape has more than its
        target), a shape to boot one of, or nothing."""
        targets = self.demand.targets(self.clock())
        surplus = self._surplus(targets, evicting=False)
        if surplus is not None:
            return surplus
        for shape, want in targets.items():
            if len(self._ready.get(shape, ())) < want:
                return shape
        return None

    def add(self, shape: Shape, pooled: Pooled) -> None:
        """Hold a booted capsule ready."""
        self._ready.setdefault(shape, []).append(pooled)

    async def _fill_forever(self) -> None:
        failures = 0
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel (stop).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wanted.wait()
            self._wanted.clear()
            while (step := self.next_step()) is not None:
                if isinstance(step, Pooled):
                    try:
                        await self._discard(step)
                    except Exception:
                        log.exception("warm pool: discarding %s failed", step.capsule.handle)
                    continue
                try:
                    self.add(step, await self._boot(step))
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
