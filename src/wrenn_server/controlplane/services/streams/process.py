"""One process in a capsule as a session sees it, through the host agent: its events, stdin,
terminal size and signals; agent failures become `SessionError`s the caller may see."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Iterator

import grpc

from ....agentproto.client import AgentClient, ConnectCall, ProcessCall
from ....proto.hostagent.v1 import hostagent_pb2 as pb
from ...agents.rpc import translate
from ...errors import HostAgentError, ServiceUnavailable
from .channel import CLOSE_INTERNAL, CLOSE_POLICY, SessionError

CONTROL_TIMEOUT = 30.0  # seconds for one stdin/resize/signal call to the agent


@contextlib.contextmanager
def agent_errors() -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as e:
        error = translate(e)
        internal = isinstance(error, HostAgentError | ServiceUnavailable)
        raise SessionError(error.message, CLOSE_INTERNAL if internal else CLOSE_POLICY) from None


class Process:
    """One process in a capsule, seen through an ExecStream or ConnectProcess call."""

    def __init__(
        self, client: AgentClient, sandbox_id: str, call: ProcessCall | ConnectCall
    ) -> None:
        self.client = client
        self.sandbox_id = sandbox_id
        self.call = call
        self.pid = 0
        self.exited = False

    async def next_event(self) -> pb.ProcessEvent | None:
        """The next ProcessEvent, None at the end of the stream."""
        with agent_errors():
            ev = await self.call.read()
        if not isinstance(ev, pb.ProcessEvent):
            return None  # grpc.aio.EOF
        if ev.WhichOneof("event") == "exit":
            self.exited = True
        return ev

    async def started(self) -> int:
        ev = await self.next_event()
        if ev is None or ev.WhichOneof("event") != "start":
            raise SessionError("the process did not start", CLOSE_INTERNAL)
        self.pid = int(ev.start.pid)
        return self.pid

    async def _control(self, call: Awaitable[pb.Empty]) -> None:
        with agent_errors():
            await call

    async def kill(self) -> None:
        """SIGKILL the process's whole session (the agent signals the process tree)."""
        if self.exited:
            return  # never signal a pid that may have been reused
        request = pb.SignalProcessRequest(
            sandbox_id=self.sandbox_id, pid=self.pid, signal=signal.SIGKILL
        )
        try:
            await self._control(self.client.signal_process(request, timeout=CONTROL_TIMEOUT))
        except SessionError:
            if not self.exited:
                raise

    async def write(self, data: bytes) -> None:
        if data:
            request = pb.SendStdinRequest(sandbox_id=self.sandbox_id, pid=self.pid, data=data)
            await self._control(self.client.send_stdin(request, timeout=CONTROL_TIMEOUT))

    async def resize(self, cols: int, rows: int) -> None:
        size = pb.PtySize(cols=cols, rows=rows)
        request = pb.ResizePtyRequest(sandbox_id=self.sandbox_id, pid=self.pid, size=size)
        await self._control(self.client.resize_pty(request, timeout=CONTROL_TIMEOUT))

    def detach(self) -> None:
        """Stop watching; the process itself is not touched."""
        self.call.cancel()


async def processes(client: AgentClient, sandbox_id: str) -> list[pb.ProcessInfo]:
    with agent_errors():
        res = await client.list_processes(
            pb.SandboxRef(sandbox_id=sandbox_id), timeout=CONTROL_TIMEOUT
        )
    return list(res.processes)


def output(ev: pb.ProcessEvent) -> bytes:
    """The bytes of a stdout or stderr event."""
    return ev.stdout if ev.WhichOneof("event") == "stdout" else ev.stderr


def pick(candidates: list[pb.ProcessInfo]) -> pb.ProcessInfo | None:
    """Of processes sharing a selector, a running one before an exited one, then the newest."""
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.running, p.started_at.ToNanoseconds(), p.pid))
