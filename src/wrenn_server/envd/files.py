"""File and filesystem operations behind /files and /fs/*.

Paths arrive absolute and normalised (see `users.resolve_path`). Contents move in 64 KiB pieces;
new files and directories are given to the acting user.
"""

from __future__ import annotations

import errno
import grp
import heapq
import os
import pwd
import stat

from . import users
from .errors import ApiError, from_oserror

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Type, Union

    Entry = Dict[str, Union[int, float, str, None]]
    Listing = Dict[str, Union[List[Entry], bool, Optional[str]]]

CHUNK = 64 * 1024
DEFAULT_FILE_MODE = 0o644
DIR_MODE = 0o755


class _OsErrors:
    """Context manager that reports an OSError as the matching API error for `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if isinstance(exc, OSError):
            raise from_oserror(exc, self.path) from None


class _Names:
    """uid/gid to name, cached for one request: a listing repeats the same few ids."""

    def __init__(self) -> None:
        self._users: Dict[int, str] = {}
        self._groups: Dict[int, str] = {}

    def user(self, uid: int) -> str:
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = str(uid)
        return self._users[uid]

    def group(self, gid: int) -> str:
        if gid not in self._groups:
            try:
                self._groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self._groups[gid] = str(gid)
        return self._groups[gid]


def _entry(path: str, st: os.stat_result, names: _Names) -> Entry:
    mode = st.st_mode
    target = None
    if stat.S_ISDIR(mode):
        kind = "dir"
    elif stat.S_ISREG(mode):
        kind = "file"
    elif stat.S_ISLNK(mode):
        kind = "symlink"
        try:
            target = os.readlink(path)
        except OSError:
            pass
    else:
        kind = "other"
    return {
        "name": os.path.basename(path) or "/",
        "path": path,
        "type": kind,
        "size": st.st_size,
        "mode": stat.S_IMODE(mode),
        "permissions": stat.filemode(mode),
        "owner": names.user(st.st_uid),
        "group": names.group(st.st_gid),
        "modified_at": st.st_mtime,
        "symlink_target": target,
    }


def stat_entry(path: str) -> Entry:
    """The entry of `path` itself (a symlink is described, not followed)."""
    with _OsErrors(path):
        return _entry(path, os.lstat(path), _Names())


def open_read(path: str) -> Tuple[int, int]:
    """Open a regular file for streaming; returns (fd, size). The caller closes fd."""
    with _OsErrors(path):
        # O_NONBLOCK so that a FIFO is refused below instead of blocking the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ApiError(400, "is a directory: %s" % path)
            if not stat.S_ISREG(st.st_mode):
                raise ApiError(400, "not a regular file: %s" % path)
        except BaseException:
            os.close(fd)
            raise
    return fd, st.st_size


def write_file(path: str, user: users.User, mode: Optional[int], chunks: Iterable[bytes]) -> Entry:
    """Stream `chunks` to a temporary file next to `path`, then rename it over `path`."""
    with _OsErrors(path):
        if os.path.isdir(path):
            raise ApiError(400, "is a directory: %s" % path)
        parent = os.path.dirname(path)
        _make_dirs(parent, user)
        if mode is None:
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except FileNotFoundError:
                mode = DEFAULT_FILE_MODE
        fd, temp = _temp_file(parent, os.path.basename(path))
        try:
            try:
                for chunk in chunks:
                    _write_all(fd, chunk)
                users.own_fd(fd, user)  # before fchmod: chown clears set-id bits
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.rename(temp, path)
        except BaseException:
            _unlink_quietly(temp)
            raise
    return stat_entry(path)


def _temp_file(directory: str, base: str) -> Tuple[int, str]:
    for _ in range(16):
        # Keep the name under NAME_MAX (255) whatever the target's name is.
        name = os.path.join(directory, ".%s.%s.tmp" % (base[:200], os.urandom(6).hex()))
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), name
        except FileExistsError:
            continue
    raise ApiError(500, "cannot create a temporary file in %s" % directory)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _make_dirs(path: str, user: users.User) -> None:
    """`mkdir -p path`; directories created here belong to `user`."""
    missing: List[str] = []
    current = path
    while not os.path.isdir(current):
        if os.path.lexists(current):
            raise ApiError(409, "exists and is not a directory: %s" % current)
        missing.append(current)
        current = os.path.dirname(current)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if os.path.isdir(directory):
                continue  # created concurrently
            raise ApiError(409, "exists and is not a directory: %s" % directory) from None
        users.own_path(directory, user)


def make_dirs(path: str, user: users.User) -> Entry:
    with _OsErrors(path):
        _make_dirs(path, user)
    return stat_entry(path)


def list_dir(path: str, depth: int, limit: int, after: str = "") -> Listing:
    """The first `limit` entries below `path` (`depth` levels deep) in path order, past the path
    `after`; symlinks are not followed. `{"entries", "truncated", "next"}`: when more entries
    follow, `truncated` is set and `next` is the `after` that lists them.

    Only paths are held while walking, and only the `limit + 1` smallest of them: a directory
    of a million entries costs the memory of `limit` paths, not of a million entries.
    """
    with _OsErrors(path):
        if not os.path.isdir(path):
            os.lstat(path)  # missing: 404
            raise ApiError(400, "not a directory: %s" % path)
        first = heapq.nsmallest(limit + 1, _paths(path, depth, after))
    truncated = len(first) > limit
    del first[limit:]
    names = _Names()
    entries: List[Entry] = []
    for found in first:
        try:
            entries.append(_entry(found, os.lstat(found), names))
        except OSError:
            continue  # removed while we were listing
    return {"entries": entries, "truncated": truncated, "next": first[-1] if truncated else None}


def _paths(directory: str, depth: int, after: str) -> Iterator[str]:
    with os.scandir(directory) as items:
        for item in items:
            path = item.path
            if path > after:
                yield path
            if depth > 1 and _may_hold_after(path, after):
                try:
                    if item.is_dir(follow_symlinks=False):
                        yield from _paths(path, depth - 1, after)
                except OSError:
                    pass  # unreadable or vanished subdirectory: list the rest


def _may_hold_after(directory: str, after: str) -> bool:
    """False when every path below `directory` sorts before `after` (a later page)."""
    prefix = directory + "/"
    return not after or prefix >= after or after.startswith(prefix)


def move(source: str, destination: str, user: users.User) -> Entry:
    """Rename `source` to `destination` (copying across filesystems), creating parents."""
    with _OsErrors(source):
        os.lstat(source)
    with _OsErrors("%s -> %s" % (source, destination)):
        _make_dirs(os.path.dirname(destination), user)
        try:
            os.rename(source, destination)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            import shutil  # here: its import (bz2, lzma) would slow every capsule's start

            shutil.move(source, destination)
    return stat_entry(destination)


def remove(path: str) -> None:
    """Remove a file, symlink or whole directory tree."""
    if path == "/":
        raise ApiError(400, "refusing to remove /")
    with _OsErrors(path):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            import shutil

            shutil.rmtree(path)
        else:
            os.unlink(path)
