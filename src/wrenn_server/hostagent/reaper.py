"""Reaping the sandbox processes runsc leaves behind.

`runsc run --detach` exits after starting the sandbox and gofer, so they are orphaned and adopted
by init. `runsc delete` then waits until they are gone, and a zombie is not gone until its parent
reaps it: with an init that reaps lazily that wait took 1.5 s per destroy. The agent therefore
makes itself the subreaper of everything it starts and reaps those orphans itself, as soon as
SIGCHLD says one died.

Only processes named `exe` (runsc re-executes itself through /proc/self/exe) are reaped here:
children the agent started with asyncio are reaped by asyncio.

`SandboxWatch` tells the manager when a sandbox process exits without being asked to (its
memory limit killed it, someone killed it), so a dead capsule is noticed in a moment rather
than by the next caller who finds its agent gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def _children() -> list[int]:
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
    return pids


def _zombie_sandbox_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    state = stat[stat.rindex(")") + 2]
    return comm == "exe" and state == "Z"


def reap_orphans() -> int:
    reaped = 0
    for pid in _children():
        if _zombie_sandbox_process(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
                reaped += 1
    return reaped


def install(loop: asyncio.AbstractEventLoop) -> None:
    if not become_subreaper():
        log.warning("cannot become a child subreaper; destroying capsules will be slower")
        return
    loop.add_signal_handler(signal.SIGCHLD, reap_orphans)
    reap_orphans()


# Watching sandboxes ---------------------------------------------------------------------------

# Without pidfds (kernels before 5.3), how often watched processes are checked.
POLL_INTERVAL = 1.0


def _exited(pid: int) -> bool:
    """Gone, or a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


class SandboxWatch:
    """Tells `on_exit(key, pid)`, once, that a watched process exited: the event loop polls a
    pidfd of it (readable from the moment it exits), so a sandbox killed by its memory limit
    or by anyone else is noticed at once, whoever its parent is (a sandbox adopted after an
    agent restart is not the agent's child). Where pidfds are missing, every POLL_INTERVAL."""

    def __init__(self, on_exit: Callable[[str, int], None]) -> None:
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._fds: dict[str, tuple[int, int]] = {}  # key -> (pid, pidfd)
        self._polled: dict[str, int] = {}
        self._poller: asyncio.TimerHandle | None = None

    def watch(self, key: str, pid: int) -> None:
        self.unwatch(key)
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._loop.call_soon(self._on_exit, key, pid)
            return
        except (AttributeError, OSError):
            self._polled[key] = pid
            self._schedule_poll()
            return
        self._fds[key] = (pid, fd)
        self._loop.add_reader(fd, self._fired, key)

    def unwatch(self, key: str) -> None:
        self._polled.pop(key, None)
        watched = self._fds.pop(key, None)
        if watched is not None:
            self._loop.remove_reader(watched[1])
            os.close(watched[1])

    def watching(self, key: str) -> bool:
        return key in self._fds or key in self._polled

    def close(self) -> None:
        for key in list(self._fds) + list(self._polled):
            self.unwatch(key)
        if self._poller is not None:
            self._poller.cancel()

    def _fired(self, key: str) -> None:
        pid = self._fds[key][0]
        self.unwatch(key)
        self._on_exit(key, pid)

    def _schedule_poll(self) -> None:
        if self._poller is None:
            self._poller = self._loop.call_later(POLL_INTERVAL, self._poll)

    def _poll(self) -> None:
        self._poller = None
        for key, pid in list(self._polled.items()):
            if _exited(pid):
                del self._polled[key]
                self._on_exit(key, pid)
        if self._polled:
            self._schedule_poll()
