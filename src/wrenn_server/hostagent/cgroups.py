"""A capsule's cgroups, removed once its sandbox is gone. runsc removes them at `runsc delete`,
but not for a sandbox that died before it (killed from the host, mid-boot): measured, an empty
cgroup per controller stays behind for good, each holding kernel memory, and they add up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
RETRY_SEC = 0.05
# How long a stopped sandbox's last tasks may take to leave its cgroups before they are removed.
RELEASE_SEC = 5.0


def existing(cgroup: str, root: Path = ROOT) -> list[Path]:
    """The cgroup's directories: in each cgroup v1 hierarchy, and in a v2 (unified) root."""
    rel = cgroup.strip("/")
    try:
        hierarchies = sorted(os.listdir(root))
    except OSError:
        return []
    candidates = [root / rel, *(root / name / rel for name in hierarchies)]
    return [path for path in candidates if path.is_dir() and not path.is_symlink()]


def children(parent: str, root: Path = ROOT) -> set[str]:
    """The names of the cgroups right under `parent`, in any hierarchy."""
    names: set[str] = set()
    for path in existing(parent, root):
        with contextlib.suppress(OSError), os.scandir(path) as entries:
            names |= {e.name for e in entries if e.is_dir(follow_symlinks=False)}
    return names


def _remove_tree(path: Path) -> bool:
    """rmdir the cgroup and any child cgroup (deepest first); False if one still has tasks."""
    removed = True
    for parent, children, _files in os.walk(path, topdown=False):
        for child in children:
            removed &= _rmdir(Path(parent) / child)
    return _rmdir(path) and removed


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass  # the same hierarchy under another name (cpu and cpuacct), or already gone
    except OSError:
        return False  # EBUSY: a task is still in it
    return True


async def remove(cgroup: str, wait_sec: float, root: Path = ROOT) -> list[Path]:
    """Remove `cgroup` from every hierarchy, waiting up to `wait_sec` for its last tasks to
    exit; returns the directories still there."""
    deadline = time.monotonic() + wait_sec
    while True:
        busy = [path for path in existing(cgroup, root) if not _remove_tree(path)]
        if not busy or time.monotonic() >= deadline:
            return busy
        await asyncio.sleep(RETRY_SEC)
