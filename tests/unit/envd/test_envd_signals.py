"""SIGTERM stops envd at once whichever of its threads the kernel hands the signal to. Python
runs signal handlers in the main thread only, and envd's main thread sleeps in its accept loop
for up to an hour when idle (an idle capsule must not wake): the signal must wake it."""

from __future__ import annotations

import ctypes
import os
import signal
from typing import TYPE_CHECKING

from tests.waiting import wait_until

if TYPE_CHECKING:
    from conftest import Envd

_LIBC = ctypes.CDLL(None, use_errno=True)


def _tgkill(pid: int, tid: int, sig: int) -> None:
    """The signal to one thread of another process (os.kill lets the kernel pick one)."""
    if _LIBC.tgkill(pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def test_a_sigterm_any_thread_receives_stops_envd(fresh_envd: Envd) -> None:
    pid = fresh_envd.proc.pid
    others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    assert others  # the reaper's and the output pumps' threads, at least
    _tgkill(pid, others[0], signal.SIGTERM)
    wait_until(lambda: fresh_envd.proc.poll() is not None, timeout=10, what="envd exited")
    assert fresh_envd.proc.returncode == 0
