"""What this host can still take, checked before a capsule is booted or resumed.

A capsule may not have more vCPUs than the host has CPUs. The memory its live capsules may
reserve together (their cgroup limits: starting and running ones, idle pooled ones, and boots
and resumes in flight; paused ones hold none) stays within physical memory times
`memory_overcommit`, less `memory_reserve_mb` kept for the host. A new capsule's disk (a sparse
image that can fill up to its size) must fit in the free space of the data dir, less
`disk_reserve_mb`. Idle pooled capsules give way to a capsule someone asked for, and so does a
capsule the pool is booting: the create goes ahead, and the pool's capsule is discarded when its
boot ends if the host has no room for it then (`over_limit`), so the pool never makes a create
be refused.

The checks run synchronously right before the capsule is recorded (or its claim taken), so two
concurrent requests cannot both take the last room. They complement the MemAvailable check
(`check_memory`), which catches a host short of memory for reasons the reservations do not show.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import errors
from .capsule import RUNNING, STARTING, Capsule
from .config import AgentSettings
from .metrics import memory_used_bytes
from .pool import Pooled, WarmPool

# Capsule statuses that hold their memory limit on the host.
HOLDING = (STARTING, RUNNING)


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_count: int
    memory_mb: int
    disk_free_mb: int


def resources(data_dir: Path) -> Resources:
    """This host's CPUs, physical memory and the free space on `data_dir`, MiB."""
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    return Resources(
        cpu_count=os.cpu_count() or 1,
        memory_mb=memory_mb,
        disk_free_mb=shutil.disk_usage(data_dir).free // (1 << 20),
    )


def memory_limit_mb(settings: AgentSettings, total_mb: int) -> int:
    """The memory capsules may reserve together on a host with `total_mb`."""
    return int(total_mb * settings.memory_overcommit) - settings.memory_reserve_mb


class Room:
    """The reservations of one agent: its capsules (shared with the manager), its warm pool and
    the claims of boots and resumes in flight."""

    def __init__(
        self, settings: AgentSettings, capsules: Mapping[str, Capsule], pool: WarmPool
    ) -> None:
        self.settings = settings
        self.capsules = capsules
        self.pool = pool
        # handle -> memory_mb of a capsule being booted for the pool or resumed (not yet in a
        # status that counts).
        self.claims: dict[str, int] = {}
        self.pool_claims: set[str] = set()  # of those, the pool's

    def held_mb(self) -> int:
        live = sum(
            c.memory_mb
            for c in self.capsules.values()
            if c.status in HOLDING and c.handle not in self.claims
        )
        return live + self.pool.held_mb() + sum(self.claims.values())

    def make_room(
        self, *, vcpus: int, memory_mb: int, disk_mb: int | None, evict: bool = True
    ) -> list[Pooled]:
        """Raise ResourceExhausted unless a capsule of this size fits (`disk_mb` None: its disk
        exists already). Returns the pooled capsules taken out of the pool to make room (only
        if `evict`): the caller discards them."""
        have = resources(self.settings.data_dir)
        if vcpus > have.cpu_count:
            raise errors.ResourceExhausted(
                f"this host has {have.cpu_count} CPUs: a capsule cannot have {vcpus} vCPUs here"
            )
        if disk_mb is not None:
            free = have.disk_free_mb - self.settings.disk_reserve_mb
            if disk_mb > free:
                raise errors.ResourceExhausted(
                    f"this host has {max(free, 0)} MiB of disk free for capsules: a {disk_mb} "
                    "MiB disk does not fit"
                )
        limit = memory_limit_mb(self.settings, have.memory_mb)
        short = self.held_mb() + memory_mb - limit
        booting = sum(self.claims[h] for h in self.pool_claims)
        yielding = self.pool.held_mb() + booting if evict else 0
        if short > yielding:
            raise errors.ResourceExhausted(
                f"this host has {max(memory_mb - short + yielding, 0)} MiB of memory left for "
                f"capsules: {memory_mb} MiB does not fit"
            )
        evicted: list[Pooled] = []
        while short > 0 and (pooled := self.pool.evict()) is not None:
            evicted.append(pooled)
            short -= pooled.capsule.memory_mb
        # What is still short, the pool's boots in flight give back when they end.
        return evicted

    def over_limit(self) -> bool:
        """Whether the reservations exceed what capsules may hold (a create went ahead while
        the pool was booting)."""
        limit = memory_limit_mb(self.settings, resources(self.settings.data_dir).memory_mb)
        return self.held_mb() > limit

    @contextlib.contextmanager
    def claim(self, capsule: Capsule, pooled: bool = False) -> Iterator[None]:
        """Count `capsule`'s memory while it is being booted (for the pool if `pooled`) or
        resumed."""
        self.claims[capsule.handle] = capsule.memory_mb
        if pooled:
            self.pool_claims.add(capsule.handle)
        try:
            yield
        finally:
            self.claims.pop(capsule.handle, None)
            self.pool_claims.discard(capsule.handle)


def check_checkpoint_room(settings: AgentSettings, capsule: Capsule) -> None:
    """Refuse a pause whose checkpoint would not fit on the data dir. A checkpoint is about the
    memory the capsule's sandbox uses (its memory file; what its cgroup is charged is an upper
    bound). runsc's sandbox does not survive a checkpoint that fails (measured: a full disk
    stops it), so trying and failing would lose the capsule instead of leaving it running."""
    used = memory_used_bytes(capsule.cgroup)
    need_mb = (used if used is not None else capsule.memory_mb << 20) // (1 << 20) + 16
    free_mb = shutil.disk_usage(settings.data_dir).free // (1 << 20)
    if need_mb > free_mb:
        raise errors.ResourceExhausted(
            f"the host's disk is full: pausing the capsule needs about {need_mb} MiB for its "
            f"memory image, {free_mb} MiB are free; it keeps running"
        )


def check_memory(settings: AgentSettings) -> None:
    """Refuse to start another sandbox on a host about to run out of memory: the kernel's
    OOM killer would otherwise pick among running capsules, or the agent."""
    available = available_memory_mb()
    reserve = settings.memory_reserve_mb
    if available is not None and available < reserve:
        raise errors.ResourceExhausted(
            f"the host is low on memory ({available} MiB available, {reserve} MiB kept "
            "for the host)"
        )


def available_memory_mb(meminfo: str = "/proc/meminfo") -> int | None:
    """The kernel's estimate of memory available without swapping, MiB (None if unknown)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
