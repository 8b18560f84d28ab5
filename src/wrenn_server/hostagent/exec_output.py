"""What a run-to-completion exec keeps of its output: at most a limit per stream.

The cap is asked of envd too (`max_output`), so a command printing gigabytes sends the agent only
the first bytes; the agent enforces it again whatever envd sends (an older envd restored from a
snapshot, or one a capsule's root has tampered with). With `keep_tail` the last bytes are kept
instead, and envd streams everything (it cannot know the end before the process exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import deque
from dataclasses import dataclass

from . import errors
from .envd_client import EnvdClient
from .envd_types import Event, ProcessSpec

DEFAULT_MAX_OUTPUT = 1 << 20  # per stream, when the caller does not say
MAX_OUTPUT = 16 << 20  # per stream, whatever the caller says: both fit one gRPC message
STREAMS = ("stdout", "stderr")


@dataclass
class ExecResult:
    pid: int
    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: int = 0
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False


def output_limit(requested: int) -> int:
    """The per-stream cap for a requested one (0: the default)."""
    return DEFAULT_MAX_OUTPUT if requested <= 0 else min(requested, MAX_OUTPUT)


class _Capped:
    """One stream's bytes, cut to `limit`: the first ones, or the last with `tail`."""

    def __init__(self, limit: int, tail: bool) -> None:
        self.limit = limit
        self.tail = tail
        self.size = 0
        self.chunks: deque[bytes] = deque()
        self.truncated = False

    def add(self, data: bytes) -> None:
        if not self.tail:
            room = self.limit - self.size
            if len(data) > room:
                data = data[:room]
                self.truncated = True
            if data:
                self.chunks.append(data)
                self.size += len(data)
            return
        self.chunks.append(data)
        self.size += len(data)
        while self.size - len(self.chunks[0]) >= self.limit:
            self.size -= len(self.chunks.popleft())
            self.truncated = True

    def value(self) -> bytes:
        data = b"".join(self.chunks)
        if len(data) > self.limit:
            self.truncated = True
            data = data[-self.limit :]
        return data


class ExecOutput:
    """Collects one exec's events into an ExecResult, holding at most `limit` bytes per
    stream."""

    def __init__(self, limit: int, keep_tail: bool = False) -> None:
        self.limit = limit
        self.keep_tail = keep_tail
        self._streams = {name: _Capped(limit, keep_tail) for name in STREAMS}
        self.result = ExecResult(pid=0, exit_code=-1, stdout=b"", stderr=b"")

    def envd_spec(self, spec: ProcessSpec) -> ProcessSpec:
        """The process spec for envd, asking it to cut the output where we will."""
        if self.keep_tail:
            return spec
        capped = spec.copy()
        capped["max_output"] = self.limit
        return capped

    def collect(self, ev: Event) -> None:
        if ev["type"] == "start":
            self.result.pid = int(ev["pid"])
        elif ev["type"] == "stdout" or ev["type"] == "stderr":
            self._streams[ev["type"]].add(ev["data"])
        elif ev["type"] == "exit":
            self.result.exit_code = int(ev["exit_code"])
            self.result.signal = int(ev.get("signal") or 0)
            if ev.get("stdout_truncated") is True:
                self._streams["stdout"].truncated = True
            if ev.get("stderr_truncated") is True:
                self._streams["stderr"].truncated = True

    def finish(self) -> ExecResult:
        result = self.result
        result.stdout = self._streams["stdout"].value()
        result.stderr = self._streams["stderr"].value()
        result.stdout_truncated = self._streams["stdout"].truncated
        result.stderr_truncated = self._streams["stderr"].truncated
        return result


async def run_to_end(
    client: EnvdClient, spec: ProcessSpec, timeout: float, output: ExecOutput
) -> ExecResult:
    """Run a process to its end (or kill it at `timeout` seconds, 0: none); `output` keeps a
    bounded part of what it prints."""
    result = output.result

    async def consume() -> None:
        async for ev in client.start_process(output.envd_spec(spec)):
            output.collect(ev)

    try:
        if timeout > 0:
            await asyncio.wait_for(consume(), timeout)
        else:
            await consume()
    except TimeoutError:
        result.timed_out = True
        if result.pid:
            with contextlib.suppress(errors.AgentError):
                await client.signal(result.pid, signal.SIGKILL)
    return output.finish()
