"""Which capsule shapes the warm pool keeps ready, and how many, from the creates this agent has
seen (no IO; the clock is the caller's).

A shape (template, vcpus, memory, disk) gets as many ready capsules as were created of it over
the last `window_sec`, so a repeat of the last window's creates is served from the pool, and one
while it was created at all within `idle_sec`. A shape not created for `idle_sec` gets none. The
default shape never gets fewer than `floor` (pool_size). All targets add up to at most `total`:
the default shape's floor first, then one each to the shapes in most demand (most creates in
the window, then the most recent), then a second each, and so on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

Shape = tuple[str, int, int, int]  # template, vcpus, memory_mb, disk_size_mb

# Shapes remembered at most: the stalest is forgotten first (callers choose shapes freely).
MAX_SHAPES = 64


@dataclass
class _Seen:
    last: float
    times: deque[float] = field(default_factory=deque)  # creates within the window


class Demand:
    def __init__(
        self, default: Shape, floor: int, total: int, window_sec: float, idle_sec: float
    ) -> None:
        self.default = default
        self.floor = floor
        self.total = max(total, floor)
        self.window_sec = window_sec
        self.idle_sec = max(idle_sec, window_sec)
        self._seen: dict[Shape, _Seen] = {}

    def record(self, shape: Shape, now: float) -> None:
        """A capsule of `shape` was created (from the pool or not)."""
        seen = self._seen.pop(shape, None) or _Seen(now)
        seen.last = now
        seen.times.append(now)
        while len(seen.times) > self.total:  # more than the pool could ever hold
            seen.times.popleft()
        self._seen[shape] = seen  # the dict's order: least recently created first
        while len(self._seen) > MAX_SHAPES:
            del self._seen[next(iter(self._seen))]

    def forget(self, template: str) -> None:
        """Stop keeping capsules of `template` (it was deleted or replaced)."""
        for shape in [s for s in self._seen if s[0] == template]:
            del self._seen[shape]

    def targets(self, now: float) -> dict[Shape, int]:
        """How many ready capsules each shape should have now (shapes with none left out),
        in order of demand: the default shape first, then the others."""
        wanted: dict[Shape, int] = {}
        for shape, seen in list(self._seen.items()):
            if now - seen.last >= self.idle_sec:
                del self._seen[shape]
                continue
            while seen.times and now - seen.times[0] >= self.window_sec:
                seen.times.popleft()
            wanted[shape] = max(len(seen.times), 1)
        order = sorted(wanted, key=lambda s: (-wanted[s], -self._seen[s].last, s))
        out: dict[Shape, int] = {}
        if self.floor > 0:
            out[self.default] = self.floor
        left = self.total - self.floor
        while left > 0:
            gave = False
            for shape in order:
                if left > 0 and out.get(shape, 0) < wanted[shape]:
                    out[shape] = out.get(shape, 0) + 1
                    left -= 1
                    gave = True
            if not gave:
                break
        return out
