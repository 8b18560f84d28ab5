"""Boot snapshots: a checkpoint of a capsule just booted (envd answering, nothing run by
anyone), one per shape, that the next capsule of the same shape restores instead of booting.
gVisor's boot, CPython's start in it and envd's imports are already done in the image, so a
create that the warm pool cannot serve takes ~100 ms less (docs/performance.md).

The first create of a shape boots, and asks for its snapshot: a private capsule of that shape
is booted in the background, checkpointed and kept here as `<root>/<handle>/` (`disk.img`,
`checkpoint/`). Its envd answers to the token derived from that handle; every capsule restored
from it is re-keyed to its own (and shares the snapshot's host name: docs/operations.md).

A cache of this agent's: at most `limit` shapes, the least recently used dropped first (once
no create reads it), and a template's snapshots dropped with the template. The key holds the
template's `created_at`, so a template replaced under its name is booted afresh; its old
snapshot of a shape is dropped once the new one is made. Kept across the agent's restarts when
nothing it depends on changed (`checkpoint_stamp.py`: runsc, envd's and the agent's code, the
settings a bundle holds) and its template is still the one it was made of; anything else found
at start is removed, and so is anything half-made."""

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
# What a kept snapshot is of, and the stamp it was made under; written last, so a snapshot
# without it was cut short.
SHAPE = "shape.json"


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
        self.stamp = ""  # what a snapshot made now is tied to (`load` sets it)

    @property
    def making(self) -> Path:
        """Where the capsules being snapshotted live (not among the agent's capsules)."""
        return self.root / MAKING

    async def load(self, stamp: str, current: Callable[[Key], bool]) -> None:
        """Take on what an earlier agent kept under the same `stamp` for templates still
        `current`, the newest `limit` of them; remove the rest and whatever it left half-made
        (the maker's sandbox, network and cgroups are swept with the other strays, before
        this; its mounts here)."""
        self.stamp = stamp
        if self.root.exists():
            for point in mounts_under(self.root):
                await run_quiet("umount", "-l", point)
            await asyncio.to_thread(shutil.rmtree, self.making, ignore_errors=True)
            self._kept.update(await asyncio.to_thread(self._found, current))
            if self._kept:
                log.info("boot snapshots kept from before: %d", len(self._kept))
        private_dir(self.root)
        private_dir(self.making)

    def _found(self, current: Callable[[Key], bool]) -> list[tuple[Key, BootSnapshot]]:
        """The snapshots under the root that may be restored (the newest of a shape, the
        newest `limit` of them), oldest first; the others removed."""
        candidates: list[tuple[float, Key, Path]] = []
        for d in self.root.iterdir():
            read = self._read(d)
            if read is None or not current(read[0]):
                shutil.rmtree(d, ignore_errors=True)
            else:
                candidates.append((read[1], read[0], d))
        found: dict[Key, BootSnapshot] = {}
        for _made_at, key, d in sorted(candidates, key=lambda c: c[0]):
            if key in found:  # an older one of the same shape
                shutil.rmtree(found.pop(key).dir, ignore_errors=True)
            found[key] = BootSnapshot(d, d.name)
        kept = list(found.items())
        cut = max(len(kept) - max(self.limit, 0), 0)
        for _key, snap in kept[:cut]:
            shutil.rmtree(snap.dir, ignore_errors=True)
        return kept[cut:]

    def _read(self, d: Path) -> tuple[Key, float] | None:
        """A kept snapshot's key and when it was made; None if this agent may not restore it
        (made under another stamp, cut short, not a snapshot)."""
        try:
            shape = json.loads((d / SHAPE).read_bytes())
            made_at = (d / SHAPE).stat().st_mtime
            template, created_at = shape["template"], float(shape["template_created_at"])
            sizes = (shape["vcpus"], shape["memory_mb"], shape["disk_size_mb"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (isinstance(template, str) and all(isinstance(n, int) for n in sizes)):
            return None
        snap = BootSnapshot(d, d.name)
        if shape.get("stamp") != self.stamp:
            return None
        if not (snap.checkpoint.is_dir() and snap.disk_image.is_file()):
            return None
        return ((template, *sizes), created_at), made_at

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
        shape |= {"memory_mb": memory_mb, "disk_size_mb": disk_size_mb, "stamp": self.stamp}
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
