"""Per-capsule resource metrics: a sampler reads each running capsule's CPU, memory and disk
every 500 ms into three tiered ring buffers.

| tier  | step  | kept      | points |
| ----- | ----- | --------- | ------ |
| `10m` | 0.5 s | 10 min    | 1200   |
| `2h`  | 30 s  | 2 hours   | 240    |
| `24h` | 5 min | 24 hours  | 288    |

The coarser tiers hold averages over their step, emitted when a step closes. What is read:
- CPU: the sandbox cgroup's CPU time (cgroup v1 `cpuacct.usage`, v2 `cpu.stat` usage_usec); the
  percentage is its growth over wall time, normalized to the capsule's vCPUs (0-100).
- memory: the cgroup's resident memory (v1 `memory.stat` total_rss, v2 `memory.stat` anon) -
  what the sandbox holds, without page cache the kernel can drop;
- disk: bytes allocated to the capsule's sparse CoW image (st_blocks), what it costs the host.
Buffers outlive a pause (a resumed capsule's charts go on) and go with the capsule on destroy.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .capsule import RUNNING, Capsule

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class Point:
    ts: float  # unix seconds
    cpu_pct: float
    mem_bytes: int
    disk_bytes: int


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str
    step: float
    capacity: int


TIERS = (
    TierSpec("10m", SAMPLE_INTERVAL, 1200),
    TierSpec("2h", 30.0, 240),
    TierSpec("24h", 300.0, 288),
)


class _Averaged:
    """A ring of averages over fixed, wall-clock aligned steps."""

    def __init__(self, spec: TierSpec) -> None:
        self.spec = spec
        self.points: deque[Point] = deque(maxlen=spec.capacity)
        self._window = -1
        self._n = 0
        self._cpu = 0.0
        self._mem = 0
        self._disk = 0

    def add(self, p: Point) -> None:
        window = math.floor(p.ts / self.spec.step)
        if window != self._window:
            self._close()
            self._window = window
        self._n += 1
        self._cpu += p.cpu_pct
        self._mem += p.mem_bytes
        self._disk += p.disk_bytes

    def _close(self) -> None:
        if self._n:
            self.points.append(
                Point(
                    ts=self._window * self.spec.step,
                    cpu_pct=self._cpu / self._n,
                    mem_bytes=self._mem // self._n,
                    disk_bytes=self._disk // self._n,
                )
            )
        self._n, self._cpu, self._mem, self._disk = 0, 0.0, 0, 0


class CapsuleMetrics:
    """The three tiers of one capsule."""

    def __init__(self) -> None:
        self.raw: deque[Point] = deque(maxlen=TIERS[0].capacity)
        self._averaged = [_Averaged(spec) for spec in TIERS[1:]]

    def add(self, p: Point) -> None:
        self.raw.append(p)
        for tier in self._averaged:
            tier.add(p)

    def tiers(self) -> dict[str, list[Point]]:
        out = {TIERS[0].name: list(self.raw)}
        for tier in self._averaged:
            out[tier.spec.name] = list(tier.points)
        return out


# Reading a sandbox ------------------------------------------------------------------------------

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat_field(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def cpu_time_ns(cgroup: str) -> int | None:
    """CPU time the cgroup's tasks have used, in ns (cgroup v1 or v2)."""
    rel = cgroup.strip("/")
    v1 = _read_int(_CGROUP_ROOT / "cpuacct" / rel / "cpuacct.usage")
    if v1 is not None:
        return v1
    usec = _stat_field(_CGROUP_ROOT / rel / "cpu.stat", "usage_usec")
    return usec * 1000 if usec is not None else None


def resident_bytes(cgroup: str) -> int | None:
    rel = cgroup.strip("/")
    v1 = _stat_field(_CGROUP_ROOT / "memory" / rel / "memory.stat", "total_rss")
    if v1 is not None:
        return v1
    return _stat_field(_CGROUP_ROOT / rel / "memory.stat", "anon")


def memory_used_bytes(cgroup: str) -> int | None:
    """All memory charged to the cgroup (v1 `memory.usage_in_bytes`, v2 `memory.current`):
    processes, page cache and the sandbox's memory file, which a checkpoint writes out."""
    rel = cgroup.strip("/")
    v1 = _read_int(_CGROUP_ROOT / "memory" / rel / "memory.usage_in_bytes")
    return v1 if v1 is not None else _read_int(_CGROUP_ROOT / rel / "memory.current")


def has_tasks(cgroup: str) -> bool:
    """Whether any process is in the cgroup (v1: its memory controller's; v2: unified)."""
    rel = cgroup.strip("/")
    for procs in (
        _CGROUP_ROOT / "memory" / rel / "cgroup.procs",
        _CGROUP_ROOT / rel / "cgroup.procs",
    ):
        try:
            return bool(procs.read_text().split())
        except OSError:
            continue
    return False


def oom_kills(cgroup: str) -> int:
    """How many of the cgroup's processes its memory limit killed (v1 `memory.oom_control`,
    v2 `memory.events`); 0 when unknown."""
    rel = cgroup.strip("/")
    v1 = _stat_field(_CGROUP_ROOT / "memory" / rel / "memory.oom_control", "oom_kill")
    if v1 is not None:
        return v1
    return _stat_field(_CGROUP_ROOT / rel / "memory.events", "oom_kill") or 0


def allocated_bytes(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0


class CpuMeter:
    """Turns a growing CPU-time counter into a utilization percentage."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None

    def percent(self, cpu_ns: int | None, vcpus: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if cpu_ns is None:
            self._last = None
            return 0.0
        last, self._last = self._last, (now, cpu_ns)
        if last is None or now <= last[0] or cpu_ns < last[1]:
            return 0.0
        used = (cpu_ns - last[1]) / 1e9 / (now - last[0]) / max(vcpus, 1)
        return round(min(max(used * 100.0, 0.0), 100.0), 2)


class Sampler:
    """The series of every capsule on the host, fed by `sample` every `SAMPLE_INTERVAL`."""

    def __init__(self) -> None:
        self._series: dict[str, CapsuleMetrics] = {}
        self._meters: dict[str, CpuMeter] = {}

    def sample(self, capsules: Iterable[Capsule], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for capsule in capsules:
            if capsule.status != RUNNING:
                # A paused capsule's next sandbox starts a new CPU counter.
                self._meters.pop(capsule.sandbox_id, None)
                continue
            meter = self._meters.setdefault(capsule.sandbox_id, CpuMeter())
            point = Point(
                ts=now,
                cpu_pct=meter.percent(cpu_time_ns(capsule.cgroup), capsule.vcpus),
                mem_bytes=resident_bytes(capsule.cgroup) or 0,
                disk_bytes=allocated_bytes(capsule.disk_image),
            )
            self._series.setdefault(capsule.sandbox_id, CapsuleMetrics()).add(point)

    async def run(self, capsules: Callable[[], Iterable[Capsule]]) -> None:
        """Sample `capsules()` every SAMPLE_INTERVAL until cancelled."""
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            try:
                self.sample(list(capsules()))
            except Exception:
                log.exception("metrics sample failed")

    def tiers(self, sandbox_id: str) -> dict[str, list[Point]]:
        series = self._series.get(sandbox_id)
        return series.tiers() if series else {spec.name: [] for spec in TIERS}

    def forget(self, sandbox_id: str) -> None:
        self._series.pop(sandbox_id, None)
        self._meters.pop(sandbox_id, None)
