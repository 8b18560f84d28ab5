"""Users: passwd look-ups, the base environment of a user's processes, and file ownership."""

from __future__ import annotations

import os
import pwd
import threading

from .errors import ApiError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What a look-up reads: the account databases and the switch naming their source ("files" in
# a capsule). Any change to one of them (useradd, usermod, an edit) changes its inode, size or
# times, and every write in a capsule goes through its own kernel, which keeps those exact.
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf")
MAX_CACHED = 256


class User:
    """A resolved passwd entry plus its supplementary groups."""

    __slots__ = ("gid", "groups", "home", "name", "shell", "uid")

    def __init__(
        self, name: str, uid: int, gid: int, groups: List[int], home: str, shell: str
    ) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.home = home or "/"
        self.shell = shell or "/bin/sh"


class _Cache:
    """Users already resolved while the account files stay as they were: reading passwd and
    group costs every command ~1.5 ms under gVisor, stat-ing them ~0.05 ms."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version: object = None
        self.users: Dict[str, User] = {}

    def get(self, name: str, version: object) -> Optional[User]:
        with self.lock:
            if version != self.version:
                self.users.clear()
                self.version = version
            return self.users.get(name)

    def put(self, name: str, user: User, version: object) -> None:
        with self.lock:
            if version == self.version and len(self.users) < MAX_CACHED:
                self.users[name] = user


_cache = _Cache()


def _accounts_version() -> object:
    version: List[Optional[Tuple[int, int, int, int]]] = []
    for path in ACCOUNT_FILES:
        try:
            st = os.stat(path)
        except OSError:
            version.append(None)
            continue
        version.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(version)


def lookup(name: str) -> User:
    """Resolve a user name; an unknown user is a client error (400). The User is shared
    between callers: treat it as read-only."""
    if not name or "\x00" in name:
        raise ApiError(400, "invalid user name")
    # Read before resolving: a change made meanwhile shows as a new version next time.
    version = _accounts_version()
    cached = _cache.get(name, version)
    if cached is not None:
        return cached
    user = _resolve(name)
    _cache.put(name, user, version)
    return user


def _resolve(name: str) -> User:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ApiError(400, "unknown user: %s" % name) from None
    try:
        groups = os.getgrouplist(name, entry.pw_gid)
    except OSError:
        groups = [entry.pw_gid]
    return User(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir, entry.pw_shell)


def environment(user: User) -> Dict[str, str]:
    """The base environment every process of `user` starts from."""
    return {
        "PATH": BASE_PATH,
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "SHELL": user.shell,
        "LANG": "C.UTF-8",
    }


def identity(user: User) -> Tuple[Optional[int], Optional[int], Optional[List[int]]]:
    """(uid, gid, supplementary groups) to switch to when spawning, or Nones to stay as is.

    Switching only happens when it changes something: asking for envd's own identity anyway
    would stop subprocess from using vfork, and a full fork of envd costs tens of ms under gVisor.
    A non-root envd that must switch fails with EPERM, as it should.
    """
    same_groups = sorted(user.groups) == sorted(os.getgroups())
    if (user.uid, user.gid) == (os.geteuid(), os.getegid()) and same_groups:
        return None, None, None
    return user.uid, user.gid, list(user.groups)


def own_fd(fd: int, user: User) -> None:
    """Give an open file to `user` (only root can, and only root needs to)."""
    if os.geteuid() == 0:
        os.fchown(fd, user.uid, user.gid)


def own_path(path: str, user: User) -> None:
    if os.geteuid() == 0:
        os.lchown(path, user.uid, user.gid)


def resolve_path(path: str, user: User) -> str:
    """Absolute, normalised form of `path`; relative paths start at the user's home."""
    if not path:
        raise ApiError(400, "path is required")
    if "\x00" in path:
        raise ApiError(400, "path contains a NUL byte")
    if not path.startswith("/"):
        path = os.path.join(user.home, path)
    path = os.path.normpath(path)
    # normpath keeps a leading "//" (POSIX allows it to be special); Linux does not care.
    return "/" + path.lstrip("/")
