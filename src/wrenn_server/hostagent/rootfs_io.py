"""Writing into a tree that capsule code controls (a capsule's or a template's root filesystem)
without following the links it planted.

The agent runs as root on the host: a plain `open(rootfs / "etc/resolv.conf", "w")` follows a
link the capsule made (`/etc/resolv.conf -> /host/file`, or `/etc -> /`) and writes the host's
file. Here every path is walked from a directory fd one component at a time with O_NOFOLLOW, so
no link is ever followed: a link (or any non-directory) in the middle of the path is refused with
`UnsafePath`, and a file being written replaces whatever the tree had at its name (link included)
by a fresh file made with O_CREAT|O_EXCL.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A capsule racing the agent could put a link back between unlink and create; give up after this.
_ATTEMPTS = 5


class UnsafePath(OSError):
    """A component of the path is a link or not a directory: the agent will not go through it."""


def components(rel: str) -> list[str]:
    """The names along `rel`, relative to the tree's root; `..` is refused (it is never needed,
    and at the root it would leave the tree)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path {rel!r} must not contain '..'")
    return parts


def _open_child_dir(parent_fd: int, name: str, rel: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        # ELOOP: a link (O_NOFOLLOW); ENOTDIR: a file, device, or link (O_DIRECTORY).
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(e.errno, f"{name!r} in {rel!r} is a link or not a directory") from e
        raise


@contextlib.contextmanager
def open_dir(root: Path, rel: str = "", *, create: bool = False) -> Iterator[int]:
    """A file descriptor of the directory `root/rel`, reached without following any link below
    `root`. With `create`, missing directories are made (0755, as a distribution's are)."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for name in components(rel):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
            child = _open_child_dir(fd, name, rel)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _remove_entry(dir_fd: int, name: str) -> None:
    """Remove whatever is at `name` in the directory (a link itself, never its target)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        # fd-based on Linux: it never follows links inside the tree it removes either.
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


def write_file(root: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    """Make `root/rel` a new regular file holding `data` (owned by root, `mode`), whatever was
    there before. Raises `UnsafePath` if a parent directory is a link or not a directory."""
    parts = components(rel)
    if not parts:
        raise ValueError("a file needs a name")
    *parents, name = parts
    with open_dir(root, "/".join(parents)) as dir_fd:
        for _ in range(_ATTEMPTS):
            _remove_entry(dir_fd, name)
            try:
                fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
            except FileExistsError:
                continue  # put back meanwhile (a running capsule): remove it again
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)  # exactly `mode`, whatever the umask
                f.write(data)
            return
    raise UnsafePath(errno.EEXIST, f"{rel!r} keeps being replaced")


def make_dirs(root: Path, rel: str) -> None:
    """`mkdir -p root/rel` that goes through no link."""
    with open_dir(root, rel, create=True):
        pass


def remove_files_in(root: Path, rel: str) -> None:
    """Delete the regular files and links directly in the directory `root/rel` (not below)."""
    with open_dir(root, rel) as dir_fd:
        with os.scandir(dir_fd) as entries:
            names = [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
