"""Users: passwd look-ups, the base environment of a user's processes, and file ownership."""

from __future__ import annotations

import os
import pwd

from .errors import ApiError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


def lookup(name: str) -> User:
    """Resolve a user name; an unknown user is a client error (400)."""
    if not name or "\x00" in name:
        raise ApiError(400, "invalid user name")
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
