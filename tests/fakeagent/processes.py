"""Processes of a fake capsule: scripted programs (see programs.py) with the event stream, stdin,
signals and PTY size the agent's process RPCs expose.

A process keeps its whole output, so ConnectProcess replays it before the live part, as envd
does. A signalled process exits with 128 + the signal, its `signal` set. A process whose
capsule died ends its streams with the error the real agent sends then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .errors import Refused, wrong_state
from .files import FileTree, timestamp


@dataclass
class Spec:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    user: str = "root"
    tag: str = ""
    stdin: bool = False
    pty: tuple[int, int] | None = None  # (cols, rows)
    shell: bool = False  # `cmd` was a command line for /bin/sh -c


class FakeProcess:
    def __init__(
        self,
        pid: int,
        spec: Spec,
        files: FileTree,
        users: set[str],
        programs: Mapping[str, Callable[[Any], Awaitable[int]]],
    ) -> None:
        self.pid = pid
        self.spec = spec
        self.files = files
        self.users = users
        # What `argv[0]` may name (programs.py); the capsule's, shared by its processes.
        self.programs = programs
        self.started_at = time.time()
        self.output: list[tuple[str, bytes]] = []
        self.exit_code: int | None = None
        self.signal = 0
        # Set when the capsule died under the process: its streams fail with this.
        self.died: Refused | None = None
        self.size = spec.pty
        self.stdin_open = spec.stdin or spec.pty is not None
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        if not self.stdin_open:
            self._stdin.put_nowait(None)
        self._pending = b""
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.background: set[asyncio.Task[Any]] = set()

    @property
    def running(self) -> bool:
        return self.exit_code is None

    def _changed(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    # -- what the program does ---------------------------------------------------------------

    def emit(self, kind: str, data: bytes) -> None:
        if not data or not self.running:
            return
        if self.spec.pty is not None:
            # A terminal: one stream, newlines as the tty sends them.
            kind, data = "stdout", data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self.output.append((kind, data))
        self._changed()

    async def read(self) -> bytes | None:
        """The next piece of stdin; None at its end."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return await self._stdin.get()

    async def readline(self) -> bytes | None:
        while b"\n" not in self._pending:
            data = await self._stdin.get()
            if data is None:
                line, self._pending = self._pending, b""
                return line or None
            self._pending += data.replace(b"\r", b"\n") if self.spec.pty else data
        line, _, self._pending = self._pending.partition(b"\n")
        return line + b"\n"

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A command the program left running in the background (`cmd &`)."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def finish(self, exit_code: int, signal: int = 0) -> None:
        if self.running:
            self.exit_code, self.signal = exit_code, signal
            self._changed()

    # -- what callers do ---------------------------------------------------------------------

    def start(self, main: Callable[[FakeProcess], Coroutine[Any, Any, int]]) -> None:
        async def run() -> None:
            try:
                code = await main(self)
            except asyncio.CancelledError:
                return
            self.finish(code)

        self.task = asyncio.create_task(run(), name=f"fake-process-{self.pid}")

    def send_stdin(self, data: bytes) -> None:
        if not self.running:
            raise wrong_state(f"process {self.pid} has exited")
        if not self.stdin_open:
            raise wrong_state(f"stdin of process {self.pid} is closed")
        if self.spec.pty is not None:
            self.emit("stdout", data.replace(b"\r", b"\n"))  # the terminal echoes input
        self._stdin.put_nowait(data)

    def close_stdin(self) -> None:
        if not self.running:
            raise wrong_state(f"process {self.pid} has exited")
        if self.stdin_open:
            self.stdin_open = False
            self._stdin.put_nowait(None)

    def resize(self, cols: int, rows: int) -> None:
        if self.spec.pty is None:
            raise wrong_state(f"process {self.pid} has no terminal")
        if not self.running:
            raise wrong_state(f"process {self.pid} has exited")
        self.size = (cols, rows)

    def kill(self, signal: int) -> None:
        """Signal the process (and what it left in the background): it ends at once."""
        if not self.running:
            return
        self.stop()
        self.finish(128 + signal, signal)

    def stop(self) -> None:
        for task in (self.task, *self.background):
            if task is not None:
                task.cancel()

    def die(self, error: Refused) -> None:
        self.stop()
        self.died = error
        self._changed()

    async def events(self) -> AsyncIterator[pb.ProcessEvent]:
        """start, everything printed so far and what follows, then exit."""
        yield pb.ProcessEvent(start=pb.ProcessEvent.Start(pid=self.pid))
        sent = 0
        while True:
            wake = self._wake
            if self.died is not None:
                raise self.died
            while sent < len(self.output):
                kind, data = self.output[sent]
                sent += 1
                yield (
                    pb.ProcessEvent(stdout=data)
                    if kind == "stdout"
                    else pb.ProcessEvent(stderr=data)
                )
            if self.exit_code is not None:
                exit_ = pb.ProcessEvent.Exit(exit_code=self.exit_code, signal=self.signal)
                yield pb.ProcessEvent(exit=exit_)
                return
            await wake.wait()

    def info(self) -> pb.ProcessInfo:
        argv = self.spec.argv
        cmd, args = (self.spec.argv[2], []) if self.spec.shell else (argv[0], argv[1:])
        info = pb.ProcessInfo(
            pid=self.pid,
            cmd=cmd,
            args=args,
            cwd=self.spec.cwd,
            user=self.spec.user,
            tag=self.spec.tag,
            pty=self.spec.pty is not None,
            running=self.running,
            started_at=timestamp(self.started_at),
        )
        if self.exit_code is not None:
            info.exit_code = self.exit_code
        return info
