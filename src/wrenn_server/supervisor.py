"""Running the single-box platform's processes (host agent, control plane) side by side:
start them in order, stop them all on Ctrl-C or when one dies. First Ctrl-C drains, the second
forces."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .private import open_private, private_dir


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class StartupError(RuntimeError):
    pass


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, child: Child, timeout: float = 120.0) -> None:
        private_dir(child.log_path.parent)
        with os.fdopen(open_private(child.log_path, os.O_WRONLY | os.O_APPEND), "ab") as log:
            child.proc = subprocess.Popen(
                child.argv,
                stdout=log,
                stderr=log,
                env={**os.environ, **child.env},
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            )
        self.children.append(child)
        deadline = time.monotonic() + timeout
        while not child.ready():
            if child.proc.poll() is not None:
                raise StartupError(f"{child.name} exited; see {child.log_path}")
            if time.monotonic() > deadline:
                raise StartupError(f"{child.name} did not start in {timeout:.0f} s")
            time.sleep(0.1)

    def wait(self) -> int:
        """Block until Ctrl-C/SIGTERM or until a child dies; the caller then stops everything
        (a second Ctrl-C meanwhile kills the children at once)."""
        received: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            if received:  # second signal: no more patience
                self.stop(grace=0)
                sys.exit(130)
            received.append(signum)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        exited = None
        while not received and exited is None:
            exited = next((c for c in self.children if c.proc and c.proc.poll() is not None), None)
            time.sleep(0.2)
        return 0 if received else 1

    def stop(self, grace: float = 20.0, keep: int = 0) -> None:
        """Stop children in reverse start order, each given `grace` seconds to drain; the first
        `keep` children (in start order) are left running."""
        for child in reversed(self.children[keep:]):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                proc.wait(grace if grace > 0 else 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
