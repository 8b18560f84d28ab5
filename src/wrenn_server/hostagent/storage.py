"""A capsule's disk: an overlayfs whose lower layer is a template's root filesystem (shared,
read-only) and whose upper layer lives on a sparse ext4 image of `disk_size_mb`.

The image caps what a capsule can write (ENOSPC past the limit) and costs only the blocks that are
used (~3 MB when idle). Pausing keeps the image; snapshots copy it with holes preserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from . import errors
from .proc import CommandError, run, run_quiet

log = logging.getLogger(__name__)

# Options of every host mount of capsule content.
HOST_SAFE = "nosuid,nodev"


async def create_image(path: Path, size_mb: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    # No journal and no reserved blocks: the image is private scratch space, and every block of
    # the limit should be usable by the capsule.
    await run(
        "mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0",
        "-E", "lazy_itable_init=1,nodiscard", str(path),
    )  # fmt: skip


async def mount(image: Path, disk_dir: Path, lowers: list[Path], rootfs: Path) -> None:
    """Mount the image on disk_dir and the overlay on rootfs. Undone by `unmount`."""
    disk_dir.mkdir(exist_ok=True)
    rootfs.mkdir(exist_ok=True)
    # nosuid,nodev: the files on it are whatever capsule code made (setuid programs, device
    # nodes); on the host they must stay inert.
    await run("mount", "-o", f"loop,noatime,{HOST_SAFE}", str(image), str(disk_dir))
    try:
        (disk_dir / "upper").mkdir(exist_ok=True)
        (disk_dir / "work").mkdir(exist_ok=True)
        lowerdir = ":".join(str(p) for p in lowers)
        opts = f"{HOST_SAFE},lowerdir={lowerdir},upperdir={disk_dir}/upper,workdir={disk_dir}/work"
        await run("mount", "-t", "overlay", "overlay", "-o", opts, str(rootfs))
    except BaseException:
        await run_quiet("umount", str(disk_dir))
        raise


async def unmount(disk_dir: Path, rootfs: Path) -> None:
    """Unmount overlay then image (the loop device goes with it). Idempotent."""
    for target in (rootfs, disk_dir):
        if _is_mountpoint(target):
            try:
                await run("umount", str(target), timeout=30)
            except CommandError:
                # Still busy (a dying sandbox holding it): detach now, the kernel frees it later.
                await run_quiet("umount", "-l", str(target))


DISK_HELD = (
    "the capsule's disk is still held by its stopped sandbox (a busy host is still letting go "
    "of it); try again shortly"
)


async def released(image: Path, timeout: float) -> bool:
    """Whether no loop device holds `image` within `timeout` seconds.

    The sandbox runs in a private mount namespace with its own copies of our mounts, so the
    ext4 image stays mounted (and may still be flushing) until the last sandbox process is gone,
    even after our own unmount. Copying it (snapshot) or mounting it again (resume) before then
    reads or writes a filesystem that is still live elsewhere: measured, that corrupts it
    ("Structure needs cleaning").
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.005
    while await run("losetup", "-j", str(image), timeout=10):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
    return True


async def wait_released(image: Path, timeout: float) -> None:
    """Before the image is used again: refused (retryable) while something still holds it."""
    if not await released(image, timeout):
        raise errors.Unavailable(DISK_HELD)


def _is_mountpoint(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def mounts_under(root: Path) -> list[str]:
    """Mount points below root, deepest first (the order to unmount them in)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


async def copy_sparse(src: Path, dst: Path) -> None:
    await run("cp", "--sparse=always", str(src), str(dst), timeout=600)
    os.chmod(dst, 0o600)  # a capsule's disk: root's only, whatever the source's mode was


async def copy_tree(src: Path, dst: Path) -> None:
    """Copy a directory tree with owners, modes, links, xattrs and holes."""
    await run("cp", "-a", "--sparse=always", f"{src}/.", str(dst), timeout=3600)


def disk_usage(path: Path) -> int:
    """Bytes actually allocated under path (holes are free)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total
