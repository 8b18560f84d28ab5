"""Boot snapshots: a checkpoint of a capsule just booted (envd answering, nothing run by
anyone), one per shape, that the next capsule of the same shape restores instead of booting.
gVisor's boot, CPython's start in it and envd's imports are already done in the image, so a
create that the warm pool cannot serve takes ~100 ms less (docs/performance.md).

The first create of a shape boots, and asks for its snapshot: a private capsule of that shape
is booted in the background, checkpointed and kept here as `<root>/<handle>/` (`disk.img`,
`checkpoint/`). Its envd answers to the token derived from that handle; every capsule restored
from it is re-keyed to its own (and shares the snapshot's host name: docs/operations.md).

A cache of this agent's own: wiped at its start (a new version may bring another envd or
runsc), at most `limit` shapes, the least recently used dropped first (once no create reads
it), and a template's snapshots dropped with the template. The key holds the template's
`created_at`, so a template replaced under its name is booted afresh; its old snapshot of a
shape is dropped once the new one is made."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..private import private_dir, write_private
from .capsule import Capsule
from .pool_demand import Shape
from .proc import run_quiet
from .storage import mounts_under

log = logging.getLogger(__name__)

# A shape and the created_at of its template, at the time of the snapshot.
Key = tuple[Shape, float]
MAKING = "making"
# A shape whose snapshot could not be made is not tried again for this long: each try costs a
# boot (a template whose capsules cannot be checkpointed would double every create's CPU).
RETRY_SEC = 300.0
SHAPE = "shape.json"  # what a kept snapshot is of, for people (the agent keeps it in memory)


@dataclass
class BootSnapshot:
    dir: Path
    handle: str  # of the checkpointed capsule: its envd answers to that handle's token
    readers: int = 0
    retired: bool = False

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint"

    @property
    def disk_image(self) -> Path:
        return self.dir / "disk.img"


class BootSnapshots:
    def __init__(self, root: Path, limit: int, make: Callable[[Key], Awaitable[None]]) -> None:
        self.root = root
        self.limit = limit
        self._make = make
        self._kept: OrderedDict[Key, BootSnapshot] = OrderedDict()
        self._wanted: OrderedDict[Key, None] = OrderedDict()
        self._failed: dict[Key, float] = {}  # when each shape's making last failed
        self._maker: asyncio.Task[None] | None = None

    @property
    def making(self) -> Path:
        """Where the capsules being snapshotted live (not among the agent's capsules)."""
        return self.root / MAKING

    async def wipe(self) -> None:
        """Remove what an earlier agent kept or left half-made (its sandbox, network and
        cgroups are swept with the other strays, before this; its mounts here)."""
        if self.root.exists():
            for point in mounts_under(self.root):
                await run_quiet("umount", "-l", point)
            await asyncio.to_thread(shutil.rmtree, self.root, ignore_errors=True)
        private_dir(self.root)
        private_dir(self.making)

    async def stop(self) -> None:
        self._wanted.clear()
        if self._maker is not None:
            self._maker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maker

    @contextlib.contextmanager
    def reading(self, key: Key | None) -> Iterator[BootSnapshot | None]:
        """The shape's snapshot, kept on disk while the caller restores it (None if there is
        none yet)."""
        snap = None if key is None else self._kept.get(key)
        if key is None or snap is None:
            yield None
            return
        self._kept.move_to_end(key)
        snap.readers += 1
        try:
            yield snap
        finally:
            snap.readers -= 1
            if snap.retired and not snap.readers:
                self._remove(snap)

    def want(self, key: Key) -> None:
        """Ask for the shape's snapshot, made in the background one at a time."""
        if self.limit <= 0 or key in self._kept or key in self._wanted:
            return
        if time.monotonic() - self._failed.get(key, -RETRY_SEC) < RETRY_SEC:
            return
        self._wanted[key] = None
        if self._maker is None or self._maker.done():
            self._maker = asyncio.create_task(self._make_wanted(), name="boot-snapshots")

    async def _make_wanted(self) -> None:
        while self._wanted:
            key = next(iter(self._wanted))
            try:
                await self._make(key)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failed(key)
                log.info("no boot snapshot of %s: %s", key[0], e)
            finally:
                self._wanted.pop(key, None)

    def keep(self, key: Key, capsule: Capsule) -> None:
        """Make the paused capsule's checkpoint and disk the shape's snapshot."""
        snap = BootSnapshot(self.root / capsule.handle, capsule.handle)
        private_dir(snap.dir)
        capsule.disk_image.rename(snap.disk_image)
        capsule.checkpoint_dir.rename(snap.checkpoint)
        (template, vcpus, memory_mb, disk_size_mb), created_at = key
        shape = {"template": template, "template_created_at": created_at, "vcpus": vcpus}
        shape |= {"memory_mb": memory_mb, "disk_size_mb": disk_size_mb}
        write_private(snap.dir / SHAPE, json.dumps(shape).encode())
        # This shape's snapshots of the template as it was before (replaced under its name):
        # never restored again.
        for old in [k for k in self._kept if k[0] == key[0]]:
            self._retire(self._kept.pop(old))
        self._kept[key] = snap
        while len(self._kept) > self.limit:
            self._retire(self._kept.popitem(last=False)[1])

    def failed(self, key: Key) -> None:
        """The shape's snapshot could not be made or restored: dropped, and the shape booted
        as before; a create after RETRY_SEC asks for it again."""
        self._failed[key] = time.monotonic()
        if (snap := self._kept.pop(key, None)) is not None:
            self._retire(snap)

    def drop_template(self, name: str) -> None:
        for key in [k for k in self._kept if k[0][0] == name]:
            self._retire(self._kept.pop(key))

    def shapes(self) -> list[Key]:
        return list(self._kept)

    def _retire(self, snap: BootSnapshot) -> None:
        snap.retired = True
        if not snap.readers:
            self._remove(snap)

    def _remove(self, snap: BootSnapshot) -> None:
        # A memory image: removed off the event loop.
        asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, snap.dir, True)
