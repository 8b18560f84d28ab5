"""envd forgets exited processes once their remembered output passes a global budget, oldest
first, so many chatty commands cannot grow it without bound."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import time

import pytest

from wrenn_server.envd import processes, users
from wrenn_server.envd.errors import ApiError


def spawn_printer(table: processes.ProcessTable, size: int) -> int:
    user = users.lookup(pwd.getpwuid(os.geteuid()).pw_name)
    spec = processes.Spec(
        f"head -c {size} /dev/zero", None, users.environment(user), "/", user, False, None, None
    )
    return table.spawn(spec).pid


def wait_exited(table: processes.ProcessTable, pid: int) -> None:
    deadline = time.monotonic() + 10
    while table.get(pid).running or table.get(pid).log.buffered == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    while not table.get(pid).wait_events([1 << 40, 1 << 40], 0.05)[1]:
        assert time.monotonic() < deadline


def _oldest_exited_output_goes_first() -> None:
    processes.EXITED_OUTPUT_BUDGET = 3 * 1024 * 1024
    table = processes.ProcessTable()
    table.start()
    pids = []
    for _ in range(4):
        pid = spawn_printer(table, 1024 * 1024)
        wait_exited(table, pid)
        pids.append(pid)
    with pytest.raises(ApiError):
        table.get(pids[0])  # 4 MiB held > 3 MiB budget: the oldest is forgotten
    for pid in pids[1:]:
        assert table.get(pid).log.buffered == 1024 * 1024


def test_oldest_exited_output_goes_first() -> None:
    # In a process of its own: envd's reaper thread waits for any child (waitpid(-1)) and never
    # stops, so in the test process it would take the exit statuses of later tests' children.
    child = multiprocessing.get_context("fork").Process(target=_oldest_exited_output_goes_first)
    child.start()
    child.join(60)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0, "the check failed in its process (its traceback is above)"
