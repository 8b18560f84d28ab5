"""Reaping the sandbox processes runsc leaves behind.

`runsc run --detach` exits after starting the sandbox and gofer, so they are orphaned and adopted
by init. `runsc delete` then waits until they are gone, and a zombie is not gone until its parent
reaps it: with an init that reaps lazily that wait took 1.5 s per destroy. The agent therefore
makes itself the subreaper of everything it starts and reaps those orphans itself, as soon as
SIGCHLD says one died.

Only processes named `exe` (runsc re-executes itself through /proc/self/exe) are reaped here:
children the agent started with asyncio are reaped by asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal

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
