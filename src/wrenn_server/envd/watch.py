"""Directory watching behind GET /fs/watch: Linux inotify through ctypes (gVisor implements it).

A watch covers one directory, or with `recursive` every directory below it (those the acting user
may list; directories that appear later are added as they appear). Events name the entry relative
to the watched directory, with the operations of E2B's filesystem protocol: create (also moved in),
write, remove, rename (moved away) and chmod (any attribute change). Bounded: at most MAX_WATCHERS
watches per capsule and MAX_DIRS directories per watch; a kernel queue overflow (events lost) is
reported as such.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import struct
import threading

from .errors import ApiError
from .files import _OsErrors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Tuple

    from . import users

    Event = Tuple[str, str]  # (op, name relative to the watched directory)

MAX_WATCHERS = 64  # concurrent watches in one capsule
MAX_DIRS = 8192  # directories of one (recursive) watch
MAX_ANNOUNCED = 4096  # creates reported for what a new directory already held when found
READ_SIZE = 64 * 1024

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
MASK |= IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
# One inotify event can carry several operations; they are reported in this order.
OPS = (
    (IN_CREATE | IN_MOVED_TO, "create"),
    (IN_MOVED_FROM, "rename"),
    (IN_ATTRIB, "chmod"),
    (IN_MODIFY, "write"),
    (IN_DELETE, "remove"),
)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len

_slots = threading.BoundedSemaphore(MAX_WATCHERS)
_libc: Any = None


def _inotify() -> Any:
    """libc's inotify functions, loaded on first use: ctypes costs memory every capsule would
    pay otherwise."""
    global _libc
    if _libc is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc = (lib, ctypes.get_errno)
    return _libc


def may(st: os.stat_result, user: users.User, bits: int) -> bool:
    """Whether `user` has the permission `bits` (4 read, 2 write, 1 search) by the mode bits."""
    if user.uid == 0:
        return True
    if st.st_uid == user.uid:
        granted = st.st_mode >> 6
    elif st.st_gid in user.groups:
        granted = st.st_mode >> 3
    else:
        granted = st.st_mode
    return granted & bits == bits


def _check_listable(path: str, user: users.User) -> None:
    """`path` is a directory `user` may list: searchable ancestors, readable and searchable."""
    current = "/"
    for part in [p for p in path.split("/") if p][:-1]:
        current = os.path.join(current, part)
        with _OsErrors(current):
            if not may(os.stat(current), user, 1):
                raise ApiError(403, "permission denied: %s" % path)
    with _OsErrors(path):
        st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ApiError(400, "not a directory: %s" % path)
    if not may(st, user, 5):
        raise ApiError(403, "permission denied: %s" % path)


class Watcher:
    """One watch: an inotify descriptor and the directories it covers."""

    def __init__(self, root: str, recursive: bool, user: users.User) -> None:
        self.root = root
        self.recursive = recursive
        self.user = user
        self._dirs: Dict[int, str] = {}  # watch descriptor -> directory
        self._root_wd = -1
        self.fd = -1
        lib, get_errno = _inotify()
        fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = get_errno()
            raise ApiError(413, "cannot watch: %s" % os.strerror(code))
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # drops every watch of it
            self.fd = -1

    # -- adding directories -------------------------------------------------------------

    def _add(self, path: str) -> int:
        lib, get_errno = _inotify()
        if len(self._dirs) >= MAX_DIRS:
            raise ApiError(413, "too many directories to watch (at most %d)" % MAX_DIRS)
        wd: int = lib.inotify_add_watch(self.fd, os.fsencode(path), MASK)
        if wd < 0:
            code = get_errno()
            if code == errno.ENOSPC:
                raise ApiError(413, "the capsule's inotify watches are used up")
            raise OSError(code, os.strerror(code), path)
        self._dirs[wd] = path
        return wd

    def start(self) -> None:
        """Watch the root (and with `recursive` its subdirectories the user may list)."""
        self._root_wd = self._add(self.root)
        if self.recursive:
            self._add_below(self.root, None)

    def _add_below(self, directory: str, announce: Optional[List[Event]]) -> None:
        """Watch the listable subdirectories of `directory`, depth first; with `announce`, each
        entry found is reported as created (it appeared before its directory was watched)."""
        stack = [directory]
        while stack:
            current = stack.pop()
            try:
                items = os.scandir(current)
            except OSError:
                continue  # gone, or not readable
            with items:
                self._add_entries(items, stack, announce)

    def _add_entries(
        self, items: Iterator[os.DirEntry[str]], stack: List[str], announce: Optional[List[Event]]
    ) -> None:
        for item in items:
            if announce is not None and len(announce) < MAX_ANNOUNCED:
                announce.append(("create", self._relative(item.path)))
            try:
                if not item.is_dir(follow_symlinks=False):
                    continue
                if not may(item.stat(follow_symlinks=False), self.user, 5):
                    continue
                self._add(item.path)
            except OSError:
                continue  # removed meanwhile
            stack.append(item.path)

    def _forget_below(self, directory: str) -> None:
        """Stop watching `directory` and what is under it (it moved away)."""
        lib, _ = _inotify()
        prefix = directory + "/"
        for wd, path in list(self._dirs.items()):
            if path == directory or path.startswith(prefix):
                del self._dirs[wd]
                lib.inotify_rm_watch(self.fd, wd)

    def _relative(self, path: str) -> str:
        return "" if path == self.root else path[len(self.root.rstrip("/")) + 1 :]

    # -- reading events -----------------------------------------------------------------

    def wait(self, timeout: float) -> Tuple[List[Event], Optional[str]]:
        """Events that came within `timeout` seconds, and why the watch ended (None: it goes
        on). An ("overflow", "") event says some were lost."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        if not poller.poll(int(timeout * 1000)):
            return [], None
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return [], None
        return self._parse(data)

    def _parse(self, data: bytes) -> Tuple[List[Event], Optional[str]]:
        events: List[Event] = []
        end: Optional[str] = None
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw_name = data[offset : offset + length].split(b"\0", 1)[0]
            offset += length
            if mask & IN_Q_OVERFLOW:
                events.append(("overflow", ""))
                continue
            directory = self._dirs.get(wd)
            if directory is None:
                continue  # a watch already forgotten
            gone = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT
            if wd == self._root_wd and mask & gone:
                if mask & IN_MOVE_SELF:
                    events.append(("rename", ""))
                    end = "moved"
                else:
                    events.append(("remove", ""))
                    end = "removed" if not mask & IN_UNMOUNT else "unmounted"
                break
            if mask & IN_IGNORED:
                del self._dirs[wd]
                continue
            if not raw_name:
                continue  # about a subdirectory itself: its parent reports it
            path = os.path.join(directory, os.fsdecode(raw_name))
            name = self._relative(path)
            for bit, op in OPS:
                if mask & bit:
                    events.append((op, name))
            if self.recursive and mask & IN_ISDIR:
                end = self._follow_dir(mask, path, events)
                if end is not None:
                    break
        return events, end

    def _follow_dir(self, mask: int, path: str, events: List[Event]) -> Optional[str]:
        """Keep the set of watched directories in step with a directory created or moved."""
        if mask & IN_MOVED_FROM:
            self._forget_below(path)
            return None
        if not mask & (IN_CREATE | IN_MOVED_TO):
            return None
        try:
            if not may(os.stat(path), self.user, 5):
                return None
            self._add(path)
            # A new directory may have filled before it was watched: say what it holds.
            self._add_below(path, events if mask & IN_CREATE else None)
        except OSError:
            pass  # gone again
        except ApiError as exc:
            if exc.status != 413:
                raise
            return "limit"
        return None


def open_watch(path: str, recursive: bool, user: users.User) -> Watcher:
    """A started watch of `path` for `user`; the caller must `release` it."""
    real = os.path.realpath(path)
    _check_listable(real, user)
    if not _slots.acquire(blocking=False):
        raise ApiError(
            413, "too many directory watches in this capsule (at most %d)" % MAX_WATCHERS
        )
    watcher = None
    try:
        watcher = Watcher(real, recursive, user)
        with _OsErrors(real):
            watcher.start()
    except BaseException:
        if watcher is not None:
            watcher.close()
        _slots.release()
        raise
    return watcher


def release(watcher: Watcher) -> None:
    watcher.close()
    _slots.release()
