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
    from typing import Any, Callable, Iterator, List, Optional

# (setresuid, setresgid, setgroups) system call numbers; another machine keeps the fork path.
_NUMBERS = {"x86_64": (117, 119, 116), "aarch64": (147, 149, 159)}.get(os.uname().machine)

_syscall: Optional[Any] = None  # libc's syscall(), loaded on first use (ctypes costs memory)


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
    import ctypes

    return (ctypes.c_uint * max(1, len(values)))(*values)


def _call(number: int, *args: Any) -> None:
    global _syscall
    import ctypes

    if _syscall is None:
        _syscall = ctypes.CDLL(None, use_errno=True).syscall
    values = [a if isinstance(a, ctypes.Array) else ctypes.c_long(a) for a in args]
    if _syscall(ctypes.c_long(number), *values) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
