"""Running the single-box platform's processes (host agent, control plane) side by side: start
them in order, restart one that dies on its own, stop them all on Ctrl-C. First Ctrl-C drains,
the second forces.

A child that dies unexpectedly is restarted after a backoff (`RestartPolicy`: doubling from
`first_delay` up to `max_delay`, back to `first_delay` once a child had stayed up
`stable_after` seconds), never before the children started ahead of it are ready again (the
control plane needs its agent). Each death is told with its exit code or signal, on the console
and in the child's own log. More than `max_crashes` deaths of one child within `crash_window`
seconds is a crash loop: the supervisor gives up and its caller stops everything."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .private import open_private, private_dir

log = logging.getLogger(__name__)

POLL_SEC = 0.1


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5
    max_delay: float = 30.0
    # Up (and ready) this long: the next death starts the backoff over.
    stable_after: float = 60.0
    max_crashes: int = 6
    crash_window: float = 600.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool]
    # How long a restart may take to become ready before it is killed (and counted as a death).
    start_timeout: float = 120.0
    # Whatever is left of its process group once it exits is killed (the control plane's worker
    # processes, which outlive a killed parent and would keep its port). Not for the agent:
    # its capsules' sandboxes must outlive it.
    kill_group: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = field(default=0.0, repr=False)
    ready_at: float | None = field(default=None, repr=False)
    restart_at: float | None = field(default=None, repr=False)
    next_delay: float = field(default=0.0, repr=False)
    deaths: deque[float] = field(default_factory=deque, repr=False)


@dataclass(frozen=True)
class Death:
    """One unexpected exit: `delay` seconds until the restart, None when the supervisor gave up."""

    name: str
    how: str
    uptime: float
    delay: float | None


class StartupError(RuntimeError):
    pass


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Supervisor:
    def __init__(
        self,
        policy: RestartPolicy | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.children: list[Child] = []
        self.policy = policy or RestartPolicy()
        self.notify = notify or (lambda _message: None)
        self.deaths: list[Death] = []

    def start(self, child: Child, timeout: float = 120.0) -> None:
        """First start: wait until `child` is ready; StartupError if it dies or times out."""
        self._spawn(child)
        self.children.append(child)
        assert child.proc is not None
        deadline = time.monotonic() + timeout
        while not child.ready():
            if child.proc.poll() is not None:
                raise StartupError(f"{child.name} exited; see {child.log_path}")
            if time.monotonic() > deadline:
                raise StartupError(f"{child.name} did not start in {timeout:.0f} s")
            time.sleep(0.1)
        child.ready_at = time.monotonic()

    def _spawn(self, child: Child) -> None:
        private_dir(child.log_path.parent)
        with os.fdopen(open_private(child.log_path, os.O_WRONLY | os.O_APPEND), "ab") as out:
            child.proc = subprocess.Popen(
                child.argv,
                stdout=out,
                stderr=out,
                env={**os.environ, **child.env},
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            )
        child.started_at = time.monotonic()
        child.ready_at = None
        child.restart_at = None
        if not child.next_delay:
            child.next_delay = self.policy.first_delay

    def wait(self) -> int:
        """Block until Ctrl-C/SIGTERM (0) or a crash loop (1), restarting children that die
        meanwhile; the caller then stops everything (a second Ctrl-C kills the children at
        once)."""
        received: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            if received:  # second signal: no more patience
                self.stop(grace=0)
                sys.exit(130)
            received.append(signum)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        return self.watch(lambda: bool(received))

    def watch(self, stopping: Callable[[], bool]) -> int:
        """Keep the children running until `stopping()` (0) or a crash loop (1)."""
        while not stopping():
            now = time.monotonic()
            for i, child in enumerate(self.children):
                if child.restart_at is not None:
                    earlier_ready = all(c.ready_at is not None for c in self.children[:i])
                    if now >= child.restart_at and earlier_ready:
                        self._spawn(child)
                        self._tell(child, f"{child.name} restarted")
                    continue
                assert child.proc is not None
                returncode = child.proc.poll()
                if returncode is None:
                    self._check_ready(child, now)
                elif not self._died(child, returncode, now):
                    return 1
            time.sleep(POLL_SEC)
        return 0

    def _check_ready(self, child: Child, now: float) -> None:
        if child.ready_at is not None:
            return
        if child.ready():
            child.ready_at = now
            self._tell(child, f"{child.name} is ready again")
        elif now - child.started_at > child.start_timeout:
            self._tell(
                child,
                f"{child.name} was not ready {child.start_timeout:.0f} s after its restart: "
                "killing it",
            )
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()

    def _died(self, child: Child, returncode: int, now: float) -> bool:
        """Schedule the restart of a child that died; False for a crash loop (given up)."""
        policy = self.policy
        _kill_leftovers(child)
        uptime = now - child.started_at
        how = describe_exit(returncode)
        if child.ready_at is not None and now - child.ready_at >= policy.stable_after:
            child.next_delay = policy.first_delay  # it had been fine for a while
        child.deaths.append(now)
        while child.deaths and child.deaths[0] < now - policy.crash_window:
            child.deaths.popleft()
        if len(child.deaths) > policy.max_crashes:
            self.deaths.append(Death(child.name, how, uptime, None))
            self._tell(
                child,
                f"{child.name} exited ({how}) after {uptime:.1f} s; it died "
                f"{len(child.deaths)} times in {policy.crash_window:.0f} s: giving up, "
                f"stopping everything (see {child.log_path})",
            )
            return False
        delay = child.next_delay
        child.next_delay = min(delay * 2, policy.max_delay)
        child.restart_at = now + delay
        child.ready_at = None
        self.deaths.append(Death(child.name, how, uptime, delay))
        self._tell(
            child,
            f"{child.name} exited ({how}) after {uptime:.1f} s; restarting it in {delay:.1f} s "
            f"(see {child.log_path})",
        )
        return True

    def _tell(self, child: Child, message: str) -> None:
        """On the console, in our log and in the child's own log (where its last words are)."""
        log.info("%s", message)
        self.notify(message)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with contextlib.suppress(OSError):
            fd = open_private(child.log_path, os.O_WRONLY | os.O_APPEND)
            with os.fdopen(fd, "a") as out:
                out.write(f"{stamp} wrenn up: {message}\n")

    def stop(self, grace: float = 20.0, keep: int = 0) -> None:
        """Stop children in reverse start order, each given `grace` seconds to drain; the first
        `keep` children (in start order) are left running. One waiting for its restart is not
        started again."""
        for child in reversed(self.children[keep:]):
            child.restart_at = None
            proc = child.proc
            if proc is None:
                continue
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
                try:
                    proc.wait(grace if grace > 0 else 5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            _kill_leftovers(child)


def _kill_leftovers(child: Child) -> None:
    """SIGKILL to what remains of an exited child's process group (its own: each child starts
    a session), when it asks for it."""
    if child.kill_group and child.proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)
