"""`wrenn up`'s supervisor with real child processes (tiny Python scripts that record each start
and exit when told): a child that dies on its own is restarted with a growing backoff that
starts over after a stable uptime, told with its exit code or signal on the console and in its
log; a crash loop is given up; Ctrl-C (in `wrenn up`'s own process) during a backoff stops
everything at once, and nothing is restarted once a shutdown began."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wrenn_server.supervisor import Child, RestartPolicy, Supervisor

# Appends "pid monotonic-time" to argv[1], lives argv[2] seconds, exits with argv[3].
SCRIPT = (
    "import os, sys, time\n"
    "with open(sys.argv[1], 'a') as f: f.write(f'{os.getpid()} {time.monotonic()}\\n')\n"
    "time.sleep(float(sys.argv[2]))\n"
    "sys.exit(int(sys.argv[3]))\n"
)
FOREVER = 3600.0


def child(tmp: Path, name: str, lives: float = FOREVER, code: int = 0) -> Child:
    starts = tmp / f"{name}.starts"
    argv = [sys.executable, "-c", SCRIPT, str(starts), str(lives), str(code)]
    return Child(name, argv, {}, tmp / "logs" / f"{name}.log", ready=starts.exists)


def starts(tmp: Path, name: str) -> list[tuple[int, float]]:
    path = tmp / f"{name}.starts"
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(int(pid), float(at)) for pid, at in lines]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child reaped by nobody yet is a zombie: dead for our purpose.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def wait_until(condition: Callable[[], object], timeout: float = 20, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Watching:
    """`Supervisor.watch` in a thread (signal handlers are the main thread's), stopped by an
    event; `result` is what it returned."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.stopping = threading.Event()
        self.result: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.supervisor.watch(self.stopping.is_set)

    def finish(self) -> int | None:
        self.stopping.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        return self.result


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for supervisor in made:
        supervisor.stop(grace=0)


def make(
    supervisors: list[Supervisor], messages: list[str] | None = None, **policy: float
) -> Supervisor:
    notify = messages.append if messages is not None else None
    supervisor = Supervisor(RestartPolicy(**policy), notify=notify)  # type: ignore[arg-type]
    supervisors.append(supervisor)
    return supervisor


def test_a_child_killed_with_sigkill_is_restarted_and_told(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    messages: list[str] = []
    supervisor = make(supervisors, messages, first_delay=0.05)
    supervisor.start(child(tmp_path, "agent"))
    supervisor.start(child(tmp_path, "server"))
    watching = Watching(supervisor)
    [(agent_pid, _)] = starts(tmp_path, "agent")
    [(server_pid, _)] = starts(tmp_path, "server")

    os.kill(agent_pid, signal.SIGKILL)
    wait_until(lambda: len(starts(tmp_path, "agent")) == 2, what="the agent's restart")
    new_pid = starts(tmp_path, "agent")[1][0]
    assert alive(new_pid) and not alive(agent_pid)
    assert starts(tmp_path, "server") == [(server_pid, starts(tmp_path, "server")[0][1])]
    wait_until(lambda: any("agent is ready again" in m for m in messages), what="ready again")
    assert watching.finish() == 0

    [death] = supervisor.deaths
    assert (death.name, death.how, death.delay) == ("agent", "killed by SIGKILL", 0.05)
    told = "agent exited (killed by SIGKILL)"
    assert any(told in m and "restarting it in" in m for m in messages), messages
    # The child's own log says it too, between its lines.
    assert told in (tmp_path / "logs/agent.log").read_text()
    supervisor.stop()
    assert not alive(new_pid) and not alive(server_pid)


@pytest.mark.parametrize("stable_after", [10.0, 0.2])
def test_the_backoff_doubles_up_to_its_cap_and_starts_over_after_a_stable_uptime(
    tmp_path: Path, supervisors: list[Supervisor], stable_after: float
) -> None:
    # Lives 0.4 s then fails: shorter than a 10 s `stable_after`, longer than 0.2 s.
    supervisor = make(
        supervisors, first_delay=0.1, max_delay=0.4, stable_after=stable_after, max_crashes=99
    )
    supervisor.start(child(tmp_path, "flaky", lives=0.4, code=3))
    watching = Watching(supervisor)
    wait_until(lambda: len(supervisor.deaths) >= 5, timeout=30, what="five deaths")
    watching.finish()

    deaths = supervisor.deaths[:5]
    assert {d.how for d in deaths} == {"exit code 3"}
    delays = [d.delay for d in deaths]
    if stable_after > 1:
        assert delays == [0.1, 0.2, 0.4, 0.4, 0.4]
    else:
        assert delays == [0.1] * 5
    # The restarts really waited: each start came at least its delay after the previous one
    # ended (which was 0.4 s after it started).
    at = [t for _, t in starts(tmp_path, "flaky")]
    for before, after, delay in zip(at, at[1:], delays, strict=False):
        assert delay is not None
        assert after - before >= 0.4 + delay


def test_a_crash_loop_is_given_up(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    messages: list[str] = []
    supervisor = make(supervisors, messages, first_delay=0.01, max_crashes=3, crash_window=60)
    supervisor.start(child(tmp_path, "agent"))
    supervisor.start(child(tmp_path, "server", lives=0, code=1))
    started = time.monotonic()
    assert supervisor.watch(lambda: time.monotonic() - started > 30) == 1

    # Started once, restarted three times, the fourth death given up.
    assert len(starts(tmp_path, "server")) == 4
    assert [d.delay for d in supervisor.deaths] == [0.01, 0.02, 0.04, None]
    assert "died 4 times in 60 s: giving up" in messages[-1]
    # The caller then stops everything.
    [(agent_pid, _)] = starts(tmp_path, "agent")
    assert alive(agent_pid)
    supervisor.stop()
    assert not alive(agent_pid)


def test_a_restart_waits_for_the_children_started_before_it(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    """Both killed: the second (the control plane) starts only once the first (its agent) is
    ready again; a restart never ready in time is killed and counted as a death."""
    gate = tmp_path / "agent-may-be-ready"
    agent = child(tmp_path, "agent")
    agent.ready = lambda: gate.exists() or len(starts(tmp_path, "agent")) == 1
    agent.start_timeout = 1.0
    supervisor = make(supervisors, first_delay=0.05, max_delay=0.05)
    supervisor.start(agent)
    supervisor.start(child(tmp_path, "server"))
    watching = Watching(supervisor)
    for name in ("server", "agent"):
        os.kill(starts(tmp_path, name)[0][0], signal.SIGKILL)
    wait_until(lambda: len(starts(tmp_path, "agent")) == 3, what="a restart not ready in time")
    assert supervisor.deaths[-1].how == "killed by SIGKILL" and supervisor.deaths[-1].uptime > 1
    assert len(starts(tmp_path, "server")) == 1  # still waiting for its agent
    gate.touch()
    wait_until(lambda: len(starts(tmp_path, "server")) == 2, what="the server's restart")
    assert starts(tmp_path, "server")[1][1] > starts(tmp_path, "agent")[2][1]
    assert watching.finish() == 0


# `wrenn up`'s own process: Supervisor.wait() with its signal handlers, the children as above.
DRIVER = """
import sys
from pathlib import Path
from tests.unit.test_supervisor import child
from wrenn_server.supervisor import RestartPolicy, Supervisor

tmp = Path(sys.argv[1])
supervisor = Supervisor(RestartPolicy(first_delay=float(sys.argv[2])), notify=print)
supervisor.start(child(tmp, "agent"))
supervisor.start(child(tmp, "server", lives=float(sys.argv[3]), code=1))
print("watching", flush=True)
code = supervisor.wait()
print("stopping", flush=True)
supervisor.stop()
print("stopped", flush=True)
sys.exit(code)
"""


def drive(tmp: Path, first_delay: float, server_lives: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp), str(first_delay), str(server_lives)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parents[2],
    )


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 20) -> str:
    seen: list[str] = []
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if marker in line:
                return "".join(seen)
    finally:
        timer.cancel()
    raise AssertionError(f"{marker!r} never came: {''.join(seen)}")


def test_ctrl_c_during_a_backoff_stops_at_once(tmp_path: Path) -> None:
    proc = drive(tmp_path, first_delay=60, server_lives=0)
    read_until(proc, "restarting it in 60.0 s")
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, rest
    assert time.monotonic() - began < 10  # not after the backoff
    assert "stopped" in rest
    assert len(starts(tmp_path, "server")) == 1  # never restarted
    [(agent_pid, _)] = starts(tmp_path, "agent")
    assert not alive(agent_pid)


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def test_nothing_is_restarted_once_a_shutdown_began(tmp_path: Path) -> None:
    """A child dying as SIGTERM arrives is not started again, by the watch or the stop."""
    proc = drive(tmp_path, first_delay=0.3, server_lives=FOREVER)
    read_until(proc, "watching")
    # "watching" is printed just before wait() installs its handler: wait for the handler.
    wait_until(lambda: _catches_sigterm(proc.pid), what="the SIGTERM handler")
    [(server_pid, _)] = starts(tmp_path, "server")
    os.kill(server_pid, signal.SIGKILL)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "restarted" not in rest
    assert len(starts(tmp_path, "server")) == 1
    assert len(starts(tmp_path, "agent")) == 1
    assert not alive(starts(tmp_path, "agent")[0][0])


# Starts a grandchild in its own process group (as uvicorn starts its workers), records the
# grandchild's pid in argv[1], then lives forever.
FORKING = (
    "import subprocess, sys, time\n"
    "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'])\n"
    "with open(sys.argv[1], 'a') as f: f.write(f'{worker.pid} 0\\n')\n"
    "time.sleep(3600)\n"
)


@pytest.mark.parametrize("kill_group", [True, False])
def test_a_killed_childs_workers_die_with_it_when_it_asks(
    tmp_path: Path, supervisors: list[Supervisor], kill_group: bool
) -> None:
    """The control plane's workers outlive a parent killed with SIGKILL (and would keep its
    port): the supervisor kills what is left of its group before the restart, and at the stop.
    A child that does not ask (the agent, whose capsules must outlive it) keeps them."""
    workers = tmp_path / "server.starts"
    server = Child(
        "server",
        [sys.executable, "-c", FORKING, str(workers)],
        {},
        tmp_path / "logs/server.log",
        ready=workers.exists,
        kill_group=kill_group,
    )
    supervisor = make(supervisors, first_delay=0.05)
    supervisor.start(server)
    watching = Watching(supervisor)
    [(first_worker, _)] = starts(tmp_path, "server")
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)
    wait_until(lambda: len(starts(tmp_path, "server")) == 2, what="the restart")
    # Killed once its parent's death was seen (the exit follows the SIGKILL a moment later).
    wait_until(lambda: alive(first_worker) is not kill_group, what="the first worker's end")
    watching.finish()
    second_worker = starts(tmp_path, "server")[1][0]
    supervisor.stop()
    wait_until(lambda: alive(second_worker) is not kill_group, what="the second worker's end")
    assert alive(first_worker) is not kill_group
    for pid in (first_worker, second_worker):  # the test's own clean-up
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
