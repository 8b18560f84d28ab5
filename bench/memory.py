"""Host memory of a sandbox: the PSS of its processes, each address space counted once.

gVisor's systrap platform runs an application's address space in stub processes cloned with
CLONE_VM: two or three host processes share one mm. /proc/<pid>/smaps_rollup reports the mm's
pages for every process that shares it (PSS divides a page among the mms mapping it, not among
processes), so summing PSS over the processes counts that memory two or three times. Here each
mm is counted once, found with kcmp(KCMP_VM), which is what it is for.
"""

from __future__ import annotations

import ctypes
import os

KCMP_VM = 1
_SYS_KCMP = {"x86_64": 312, "aarch64": 272}.get(os.uname().machine)
_libc = ctypes.CDLL(None, use_errno=True)


def pss_kb(pid: int) -> int:
    """The PSS of one process's address space in KiB, or 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except OSError:
        return 0


def same_mm(a: int, b: int) -> bool:
    if _SYS_KCMP is None:
        raise OSError("kcmp: unknown system call number on this machine")
    return int(_libc.syscall(_SYS_KCMP, a, b, KCMP_VM, 0, 0)) == 0


def address_spaces(pids: list[int]) -> list[int]:
    """One pid per distinct address space among `pids` (processes that are gone are dropped)."""
    kept: list[int] = []
    for pid in pids:
        if not os.path.exists(f"/proc/{pid}"):
            continue
        if not any(same_mm(pid, other) for other in kept):
            kept.append(pid)
    return kept


def group_pss_kb(pids: list[int]) -> int:
    """Host memory of a group of processes: PSS summed over its distinct address spaces."""
    return sum(pss_kb(pid) for pid in address_spaces(pids))


def summed_pss_kb(pids: list[int]) -> int:
    """PSS summed per process, shared address spaces counted once per process: how this
    project's benches measured before (kept to compare with earlier numbers)."""
    return sum(pss_kb(pid) for pid in pids)
