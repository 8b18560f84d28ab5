"""The soak bench's fault injector (bench/soak.py --chaos): at random times, while the clients'
operations are in flight, kill -9 the host agent, the control plane, or one capsule's sandbox
processes (runsc's sandbox and gofer), then restart what it killed. New operations wait while
the platform recovers; once every operation in flight has ended, each client audits its
capsules against what the API and the agent say (Client.audit in soak.py) and the API's view is
compared with the agent's; then the clients go on.

The bench restarts the processes it killed itself (it runs them), as a supervisor would."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from wrenn_server.hostagent.proc import command_lines

KINDS = ("agent", "controlplane", "sandbox")
# Fault intervals outside this are refused: faster leaves no time to recover and audit, slower
# would not fault a short run at all.
MIN_INTERVAL_SEC, MAX_INTERVAL_SEC = 5.0, 600.0
# How long the platform gets to settle after a fault before a lasting disagreement is a
# violation: a create left `starting` by a killed control plane ends after its grace (the bench
# sets it to 20 s), a dead sandbox is noticed within a reconcile pass or two.
SETTLE_SEC = 180.0
# Operations time out after 300 s (the clients' HTTP timeout); waiting longer is a hang.
IDLE_WITHIN_SEC = 330.0


class Restartable(Protocol):
    """A process the bench runs: killed with SIGKILL, started again on the same address."""

    def kill9(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class Fault:
    kind: str
    at: float  # seconds into the run
    what: str
    in_flight: list[str]
    down: float = 0.0  # seconds from the kill until restarted
    hung: list[str] = field(default_factory=list)  # operations that did not end after it

    def __str__(self) -> str:
        flight = ", ".join(self.in_flight) or "nothing"
        return f"{self.kind} killed at {self.at:.1f}s ({self.what}; in flight: {flight})"


@dataclass
class Chaos:
    """Shared by the clients: the gate they pass before each operation, what they have in
    flight, the fault epoch (an operation that saw it change may have either outcome), and
    the capsules whose sandbox was killed (they must end error/stopped with a reason)."""

    agent: Restartable
    control_plane: Restartable
    data_dir: Path
    interval: float
    rng: random.Random
    # The agent's capsules ({id: "running"/"paused"/...}, its warm pool left out), to compare
    # with the API's; None skips that comparison.
    agent_view: Callable[[], Awaitable[dict[str, str]]] | None = None
    max_faults: int | None = None  # at most this many, if given
    epoch: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: dict[int, str] = field(default_factory=dict)
    victims: dict[str, Fault] = field(default_factory=dict)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    log: list[Fault] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    held: float = 0.0  # seconds the gate was closed (recovering, auditing): not work time

    def __post_init__(self) -> None:
        if not MIN_INTERVAL_SEC <= self.interval <= MAX_INTERVAL_SEC:
            raise ValueError(
                f"fault interval {self.interval:g} s: between {MIN_INTERVAL_SEC:g} and "
                f"{MAX_INTERVAL_SEC:g}"
            )
        self.gate.set()

    def disturbed(self, since: int) -> bool:
        """Whether a fault struck after an operation that started at epoch `since`."""
        return self.epoch != since

    async def run(self, deadline: float, audit: Callable[[Fault], Awaitable[None]]) -> None:
        """Inject faults until `deadline` (moved on by the time spent recovering): the first
        three are one of each kind (in a seeded order), then random kinds; after each,
        restart, wait for the clients and `audit`."""
        forced = self.rng.sample(KINDS, len(KINDS))
        while True:
            wait = self.interval * self.rng.uniform(0.5, 1.5)
            if time.monotonic() + wait > deadline + self.held - 5:
                return
            if self.max_faults is not None and len(self.log) >= self.max_faults:
                return
            await asyncio.sleep(wait)  # a random moment is the point: nothing to wait for
            if not self.in_flight:  # strike while something is under way, if soon
                for _ in range(50):
                    await asyncio.sleep(0.1)
                    if self.in_flight:
                        break
            kind = forced[0] if forced else self.rng.choice(KINDS)
            fault = await self.inject(kind)
            if fault is None:  # no sandbox to kill now: try that kind again next time
                continue
            if forced:
                forced.pop(0)
            began = time.monotonic()
            fault.hung = await self._wait_idle()
            await audit(fault)
            self.gate.set()
            self.held += time.monotonic() - began + fault.down

    async def inject(self, kind: str) -> Fault | None:
        in_flight = sorted(self.in_flight.values())
        at = time.monotonic() - self.started
        if kind == "sandbox":
            found = _sandbox_to_kill(self.data_dir, self.rng, in_flight)
            if found is None:
                return None
            cid, pids = found
            self.gate.clear()
            self.epoch += 1
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
            fault = Fault(kind, at, f"capsule {cid}, pids {pids}", in_flight)
            self.victims[cid] = fault
        else:
            proc = self.agent if kind == "agent" else self.control_plane
            self.gate.clear()
            self.epoch += 1
            began = time.monotonic()
            await asyncio.to_thread(proc.kill9)
            fault = Fault(kind, at, "restarted", in_flight)
            # Down for a moment, as between a crash and a supervisor's restart.
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))
            await asyncio.to_thread(proc.start)
            fault.down = time.monotonic() - began
            fault.what = f"restarted in {fault.down:.1f} s"
        self.faults[kind] += 1
        self.log.append(fault)
        print(f"FAULT {fault}", flush=True)
        return fault

    async def _wait_idle(self) -> list[str]:
        """Wait for the operations in flight to end; those that do not in time (hung)."""
        deadline = time.monotonic() + IDLE_WITHIN_SEC
        while self.in_flight:
            if time.monotonic() > deadline:
                return sorted(self.in_flight.values())
            await asyncio.sleep(0.1)
        return []


def _capsule_handles(data_dir: Path) -> dict[str, str]:
    """{capsule id: handle (its directory's name)} from the agent's records."""
    found = {}
    for meta in (data_dir / "capsules").glob("*/meta.json"):
        try:
            record = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") != "pooled" and record.get("sandbox_id"):
            found[str(record["sandbox_id"])] = meta.parent.name
    return found


def sandbox_pids(bundle: Path) -> list[int]:
    """The runsc sandbox and gofer processes of a capsule, found by its bundle directory."""
    needle = f"--bundle={bundle}".encode()
    found = [
        (argv[0] != b"runsc-sandbox", pid)
        for pid, argv in command_lines()
        if argv[0] in (b"runsc-sandbox", b"runsc-gofer") and needle in argv
    ]
    # The sandbox first: its gofer going first would fail its file calls before it dies.
    return [pid for _gofer, pid in sorted(found)]


def _sandbox_to_kill(
    data_dir: Path, rng: random.Random, in_flight: Sequence[str] = ()
) -> tuple[str, list[int]] | None:
    """A capsule's current sandbox: not one being paused or resumed (its bundle directory is
    the same from one sandbox to the next, so what is found then may be the stopped one still
    exiting, whose death changes nothing the audit could see), nor one whose bundle has two."""
    live: Sequence[tuple[str, list[int]]] = [
        (cid, pids)
        for cid, handle in sorted(_capsule_handles(data_dir).items())
        if not any(cid in what for what in in_flight)
        and (pids := sandbox_pids(data_dir / "capsules" / handle))
        and _one_sandbox(pids)
    ]
    return rng.choice(live) if live else None


def _one_sandbox(pids: list[int]) -> bool:
    """Whether `pids` (sandbox_pids) hold a single runsc-sandbox process."""
    sandboxes = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            sandboxes += Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"runsc-sandbox")
    return sandboxes == 1


def agent_view(target: str, secret: str, data_dir: Path) -> Callable[[], Awaitable[dict[str, str]]]:
    """What the agent at `target` holds, for Chaos.agent_view: {capsule id: status}."""
    from tests.integration.leaks import pooled_handles
    from wrenn_server.agentproto.client import AgentClient
    from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

    names = {pb.SANDBOX_STATUS_RUNNING: "running", pb.SANDBOX_STATUS_PAUSED: "paused"}
    clients: list[AgentClient] = []  # made on first use, in the running event loop

    async def view() -> dict[str, str]:
        if not clients:
            clients.append(AgentClient(target, secret))
        listed = await clients[0].list_sandboxes(pb.ListSandboxesRequest())
        pooled = pooled_handles(data_dir)
        return {
            sb.sandbox_id: names.get(sb.status, f"status {sb.status}")
            for sb in listed.sandboxes
            if sb.sandbox_id not in pooled
        }

    return view


# -- the bench's own processes --------------------------------------------------------------


@dataclass
class AgentProcess:
    """The host agent on a fixed address, started again there after a kill."""

    data_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "wrenn_server.cli", "agent", "--data-dir",
                str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"]  # fmt: skip
        with open(self.data_dir.parent / f"soak-agent-{self.port}.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + 600  # the first start builds the base template
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited; see {log.name}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not start")
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class ServerProcess(AgentProcess):
    """`wrenn server` (SQLite in its data dir) on a fixed port, started again there."""

    url: str = ""

    def start(self) -> None:
        from tests.server_process import start_server

        self.proc, self.url, _log = start_server(self.data_dir, self.env, port=self.port)
