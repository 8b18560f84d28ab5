"""Spawning as another user without a full fork of envd.

subprocess only uses vfork when it is not asked to switch user, group or groups (glibc's
setuid in a vfork child would act on envd's threads too), and a full fork of envd costs ~20-30 ms
under gVisor against ~10 ms for the whole vfork spawn. So a command of another user than envd's
own is spawned from a thread that holds that user's identity for the duration of the spawn only:
Linux keeps credentials per thread (only glibc's wrappers apply them to every thread), so the raw
system calls below change this thread alone, and the vfork child inherits them.

The thread keeps envd's effective ids as its saved ids, which is what lets it switch back, and
nothing else: at exec the kernel sets the child's saved ids to its effective ids, so the program
starts with real, effective and saved ids all the user's and no capabilities - what subprocess's
own switch in the child gives. The one difference, a working directory changed to before the
switch in subprocess's child and after it here, is left to the caller (see processes.py).
"""

from __future__ import annotations

import contextlib
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator, List

# (setresuid, setresgid, setgroups) system call numbers; another machine keeps the fork path.
_NUMBERS = {"x86_64": (117, 119, 116), "aarch64": (147, 149, 159)}.get(os.uname().machine)


def available() -> bool:
    """True if a thread's identity can be switched here: envd runs as root on a known machine
    (a non-root envd cannot switch anyway and keeps subprocess's own error)."""
    return _NUMBERS is not None and os.geteuid() == 0


@contextlib.contextmanager
def switched(uid: int, gid: int, groups: List[int]) -> Iterator[None]:
    """This thread runs as `uid`/`gid` with supplementary `groups` inside the block."""
    assert _NUMBERS is not None
    set_uids, set_gids, set_groups = _NUMBERS
    ruid, euid, suid = os.getresuid()
    rgid, egid, sgid = os.getresgid()
    own_groups = os.getgroups()
    undo: List[Callable[[], None]] = []
    try:
        # Groups and gids first: changing them needs the capabilities the uid switch drops.
        _call(set_groups, len(groups), _uint_array(groups))
        undo.append(lambda: _call(set_groups, len(own_groups), _uint_array(own_groups)))
        _call(set_gids, gid, gid, egid)
        undo.append(lambda: _call(set_gids, rgid, egid, sgid))
        _call(set_uids, uid, uid, euid)
        undo.append(lambda: _call(set_uids, ruid, euid, suid))
        yield
    finally:
        for step in reversed(undo):
            _restore(step)


def _restore(step: Callable[[], None]) -> None:
    """A thread of envd left with a user's identity would serve later requests as that user:
    if switching back ever fails, envd stops rather than go on."""
    try:
        step()
    except BaseException as exc:
        sys.stderr.write("envd: cannot restore a thread's identity: %s\n" % exc)
        os._exit(70)


def _uint_array(values: List[int]) -> Any:
    return (_types().uint * max(1, len(values)))(*values)


def _call(number: int, *args: Any) -> None:
    types = _types()
    values = [types.long(a) if isinstance(a, int) else a for a in args]
    if types.syscall(types.long(number), *values) != 0:
        err = types.errno()
        raise OSError(err, os.strerror(err))


class _Types:
    """libc's syscall() through _ctypes alone: the ctypes package on top of it would cost
    every capsule a few hundred KB more for the three calls made here."""

    def __init__(self) -> None:
        import _ctypes  # on first use: a capsule whose commands all run as root never pays

        class Long(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "l"

        class UInt(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "I"

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = Long

        # None: the program itself and the libraries it loaded, libc among them.
        libc = _ctypes.dlopen(None, os.RTLD_LOCAL)  # type: ignore[arg-type]
        self.long = Long
        self.uint = UInt
        self.errno = _ctypes.get_errno
        self.syscall = Function(_ctypes.dlsym(libc, "syscall"))


_loaded: List[_Types] = []


def _types() -> _Types:
    if not _loaded:
        _loaded.append(_Types())
    return _loaded[0]
