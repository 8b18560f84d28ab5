"""Doze: an idle capsule's sandbox is frozen (its host cgroup's freezer) and thawed before
anything reaches it again.

An idle gVisor sandbox still costs ~2.5% of a core on the systrap platform (its fast-path
controller wakes every 400 us whatever runs inside; docs/performance.md). A frozen cgroup costs
nothing, and thawing it takes well under a millisecond, so a capsule nobody uses dozes.

When: a running capsule dozes once, for the whole of the last `after_sec` seconds, nobody asked
anything of it (its last request, or its last thaw, is that old), no request or stream to its
envd is open (commands, PTYs, watches, file transfers, port tunnels), no lifecycle operation
holds or waits for it, its cgroup used at most `max_cpu_pct` of a core (gVisor's idle floor is
~2.5%; a process doing work uses more) and no packet crossed its network link.

Pooled capsules (pool.py) doze the same way, and are thawed when handed over.

Thawed: before any request or stream reaches its envd (the envd client calls `wake` first, see
CapsuleTable.wake), before pause, snapshot, flatten and destroy (runsc cannot checkpoint a
frozen sandbox, and a frozen task does not even die of SIGKILL under cgroup v1), when the agent
stops, and for every capsule a restarted agent adopts.

While a capsule dozes its processes do not run: their timers fire late (at the thaw), and a
connection the capsule holds to the outside sees no keep-alives. Clocks stay right: gVisor reads
the host's clock, so the wall clock is correct at once after a thaw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .capsule import POOLED, RUNNING, Capsule
from .metrics import cpu_time_ns

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
NET_ROOT = Path("/sys/class/net")
PROC_ROOT = Path("/proc")
_SIGKILL_BIT = 1 << 8  # signal 9 in /proc/<pid>/status's pending masks


# -- the decision (no IO) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """What the agent knows of one running capsule when it considers dozing it."""

    idle_sec: float  # since its last request or thaw
    in_use: int  # requests and streams to its envd open now
    lifecycle: bool  # an operation (pause, destroy, ...) holds or waits for it
    # Over the last `after_sec` seconds (None: not observed that long since it ran last):
    cpu_pct: float | None  # % of one core its sandbox's cgroup used
    packets: int | None  # packets across its network link, either way


def should_doze(seen: Observation, after_sec: float, max_cpu_pct: float) -> bool:
    """Whether a capsule is idle enough to freeze (after_sec 0: dozing is off)."""
    if after_sec <= 0 or seen.in_use > 0 or seen.lifecycle:
        return False
    if seen.idle_sec < after_sec or seen.cpu_pct is None or seen.packets is None:
        return False
    return seen.cpu_pct <= max_cpu_pct and seen.packets == 0


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic seconds
    cpu_ns: int
    packets: int


class Window:
    """Samples of one sandbox's CPU time and link packets, enough to tell what it used over the
    last `span` seconds."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        last = self._samples[-1] if self._samples else None
        if last is not None and (sample.cpu_ns < last.cpu_ns or sample.packets < last.packets):
            self._samples.clear()  # a new sandbox or link: its counters started again
        self._samples.append(sample)

    def over(self, span: float) -> tuple[float, int] | None:
        """CPU (% of one core) and packets over at least the last `span` seconds, measured from
        the newest sample at least that old; None before the samples cover it."""
        if not self._samples:
            return None
        now = self._samples[-1]
        start = None
        for sample in self._samples:
            if now.at - sample.at < span:
                break
            start = sample
        if start is None:
            return None
        # Older samples are of no more use: the next call measures from `start` or later.
        while self._samples[0] is not start:
            self._samples.popleft()
        cpu = (now.cpu_ns - start.cpu_ns) / 1e9 / (now.at - start.at) * 100.0
        return cpu, now.packets - start.packets


# -- the host's side -----------------------------------------------------------------------


class CgroupFreezer:
    """Freezes and thaws a cgroup's tasks: cgroup v1's freezer controller, else v2's
    cgroup.freeze."""

    def __init__(self, root: Path = CGROUP_ROOT, proc_root: Path = PROC_ROOT) -> None:
        self.root = root
        self.proc_root = proc_root

    def _files(self, cgroup: str) -> tuple[Path, Path]:
        rel = cgroup.strip("/")
        return self.root / "freezer" / rel / "freezer.state", self.root / rel / "cgroup.freeze"

    def freeze(self, cgroup: str) -> bool:
        """Freeze; False if the cgroup is not there (its sandbox is gone)."""
        v1, v2 = self._files(cgroup)
        for path, value in ((v1, "FROZEN"), (v2, "1")):
            if path.exists():
                with contextlib.suppress(OSError):
                    path.write_text(value)
                    return True
        return False

    def thaw(self, cgroup: str) -> None:
        v1, v2 = self._files(cgroup)
        for path, value in ((v1, "THAWED"), (v2, "0")):
            if path.exists():
                with contextlib.suppress(OSError):
                    path.write_text(value)
                return

    def kill_pending(self, cgroup: str) -> bool:
        """Whether a task of the cgroup was sent SIGKILL it has not acted on: under cgroup v1 a
        frozen task dies only once thawed, so a sandbox killed from the host while it dozes
        would otherwise look alive until its next use."""
        v1, v2 = self._files(cgroup)
        for procs in (v1.parent / "cgroup.procs", v2.parent / "cgroup.procs"):
            try:
                pids = procs.read_text().split()
            except OSError:
                continue
            return any(_sigkill_pending(self.proc_root / pid / "status") for pid in pids)
        return False

    def frozen(self, cgroup: str) -> bool:
        """Whether the cgroup is asked to be frozen (v1 FREEZING counts)."""
        v1, v2 = self._files(cgroup)
        with contextlib.suppress(OSError):
            return v1.read_text().strip() != "THAWED"
        with contextlib.suppress(OSError):
            return v2.read_text().strip() == "1"
        return False


def _sigkill_pending(status: Path) -> bool:
    try:
        lines = status.read_text().splitlines()
    except OSError:
        return False  # gone: nothing left to thaw for
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("SigPnd", "ShdPnd") and int(value.strip() or "0", 16) & _SIGKILL_BIT:
            return True
    return False


def link_packets(veth: str, root: Path = NET_ROOT) -> int | None:
    """Packets received and sent by the host's end of a capsule's link."""
    try:
        stats = root / veth / "statistics"
        return int((stats / "rx_packets").read_text()) + int((stats / "tx_packets").read_text())
    except (OSError, ValueError):
        return None


def host_counters(capsule: Capsule) -> tuple[int, int] | None:
    """The capsule's sandbox CPU time (ns, its cgroup) and link packets, None if either is
    gone."""
    if capsule.net is None:
        return None
    cpu_ns, packets = cpu_time_ns(capsule.cgroup), link_packets(capsule.net.veth)
    return None if cpu_ns is None or packets is None else (cpu_ns, packets)


# -- the loop ------------------------------------------------------------------------------


class Capsules(Protocol):
    """The capsules the dozer looks at (CapsuleTable)."""

    @property
    def capsules(self) -> Mapping[str, Capsule]: ...

    def lock_users(self, sandbox_id: str) -> int: ...

    def in_use(self, sandbox_id: str) -> int: ...


class Dozer:
    def __init__(
        self,
        table: Capsules,
        after_sec: float,
        max_cpu_pct: float,
        freezer: CgroupFreezer | None = None,
        counters: Callable[[Capsule], tuple[int, int] | None] = host_counters,
        clock: Callable[[], float] = time.time,
        pooled: Callable[[], Iterable[Capsule]] = tuple,
    ) -> None:
        self.table = table
        self.pooled = pooled  # the warm pool's idle capsules: they doze too
        self.after_sec = after_sec
        self.max_cpu_pct = max_cpu_pct
        self.freezer = freezer or CgroupFreezer()
        self.counters = counters
        self.clock = clock
        self.dozing: set[str] = set()  # handles
        self._windows: dict[str, Window] = {}
        self._woken_at: dict[str, float] = {}  # wall clock, as Capsule.last_active_at

    @property
    def interval(self) -> float:
        """How often capsules are looked at: a few times per quiet period, at most every 5 s."""
        return min(5.0, max(0.5, self.after_sec / 4))

    async def run(self) -> None:
        """Look at every capsule each `interval` until cancelled (nothing when dozing is off)."""
        if self.after_sec <= 0:
            return
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.tick()
            except Exception:
                log.exception("doze pass failed")

    def tick(self, now: float | None = None, mono: float | None = None) -> None:
        now = self.clock() if now is None else now
        mono = time.monotonic() if mono is None else mono
        present = set()
        for capsule in [*self.table.capsules.values(), *self.pooled()]:
            handle = capsule.handle
            present.add(handle)
            if capsule.status not in (RUNNING, POOLED) or capsule.net is None:
                self.forget(capsule)
                continue
            if handle in self.dozing:
                if self.freezer.kill_pending(capsule.cgroup):
                    log.info("%s was killed while dozing: thawed to let it die", capsule.sandbox_id)
                    self.wake(capsule)
                continue
            seen = self._observe(capsule, now, mono)
            if seen is not None and should_doze(seen, self.after_sec, self.max_cpu_pct):
                self._freeze(capsule)
        for handle in set(self._windows) - present:  # removed without a forget
            self._windows.pop(handle, None)
            self._woken_at.pop(handle, None)

    def _observe(self, capsule: Capsule, now: float, mono: float) -> Observation | None:
        counters = self.counters(capsule)
        if counters is None:
            return None
        cpu_ns, packets = counters
        window = self._windows.setdefault(capsule.handle, Window())
        window.add(Sample(mono, cpu_ns, packets))
        used = window.over(self.after_sec)
        last = max(capsule.last_active_at, self._woken_at.get(capsule.handle, 0.0))
        return Observation(
            idle_sec=now - last,
            in_use=self.table.in_use(capsule.sandbox_id),
            lifecycle=self.table.lock_users(capsule.sandbox_id) > 0,
            cpu_pct=used[0] if used else None,
            packets=used[1] if used else None,
        )

    def _freeze(self, capsule: Capsule) -> None:
        if self.freezer.freeze(capsule.cgroup):
            self.dozing.add(capsule.handle)
            self._windows.pop(capsule.handle, None)
            log.debug("%s dozes", capsule.sandbox_id)

    def wake(self, capsule: Capsule) -> None:
        """Thaw the capsule if it dozes; either way it counts as just woken (a full quiet
        period must pass before it dozes again). Synchronous and fast: one cgroup write."""
        if capsule.handle in self.dozing:
            self.freezer.thaw(capsule.cgroup)
            self.dozing.discard(capsule.handle)
            log.debug("%s woke", capsule.sandbox_id)
        self._woken_at[capsule.handle] = self.clock()
        self._windows.pop(capsule.handle, None)

    def forget(self, capsule: Capsule) -> None:
        """Thaw and drop what is known of a capsule that stops running here."""
        if capsule.handle in self.dozing:
            self.freezer.thaw(capsule.cgroup)
            self.dozing.discard(capsule.handle)
        self._windows.pop(capsule.handle, None)
        self._woken_at.pop(capsule.handle, None)

    def thaw_leftovers(self, capsules_dir: Path) -> None:
        """Thaw the sandbox of every capsule recorded under `capsules_dir` (at start-up)."""
        for d in sorted(capsules_dir.iterdir()) if capsules_dir.is_dir() else []:
            try:
                capsule = Capsule.load(d)
            except Exception:
                continue  # recovery removes what it cannot read
            self.freezer.thaw(capsule.cgroup)

    def wake_all(self) -> None:
        for capsule in list(self.table.capsules.values()):
            self.forget(capsule)
