"""Interactive process sessions over a message channel: exec streams, PTYs, reattaching.

The API layer adapts a WebSocket to a `Channel`; a session runs one process conversation between
that channel and the capsule's host agent (ExecStream, ConnectProcess, SendStdin, ResizePty,
SignalProcess) and returns the close code for the socket. Wire messages are the public
contract's:

- exec stream: the caller's first message `{"type": "start", "cmd", "args"?, "envs"?, "cwd"?,
  "tag"?}` (no `args`: `cmd` is a shell command line), later `{"type": "stop"}`; out go
  `start`, `stdout`/`stderr` (text), `exit`. The process lives only as long as the socket: it is
  killed when the caller goes away before it exits.
- PTY: first `start` (cmd/args/cols/rows/envs/cwd/user) or `connect` (tag, or pid); then input
  as binary frames (as the SDK sends it) or `{"type": "input", "data": <base64>}`, `resize`,
  `kill`, `pong`. Out go `started` {tag, pid}, the terminal's output as binary frames (what the
  SDK reads), `exit`, `ping` every PING_INTERVAL and `error` with `fatal`. The process outlives
  the socket; `connect` reattaches, replaying the buffered output first.
- reattach (processes/{selector}/stream): `start`, buffered then live `stdout`/`stderr`, `exit`.
  Detaching leaves the process running.

Failures end a session with `{"type": "error", "data": <message>}` (plus `"fatal": true` on a
PTY). Messages are the caller's own mistakes or what `hosts.rpc.translate` lets through; other
failures are logged and reported as a fixed "internal error".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import json
import logging
import secrets
import signal
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

import grpc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ...agentproto.client import AgentClient, ConnectCall, ProcessCall
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from ..agents.rpc import translate
from ..errors import HostAgentError, ServiceUnavailable

log = logging.getLogger(__name__)

FIRST_MESSAGE_TIMEOUT = 60.0  # seconds the caller has to send its first message
PING_INTERVAL = 30.0  # seconds between keepalive pings on a PTY session
CONTROL_TIMEOUT = 30.0  # seconds for one stdin/resize/signal call to the agent

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # the caller broke the protocol, or asked for something refused
CLOSE_INTERNAL = 1011  # the host or the control plane failed

PTY_TAG_PREFIX = "pty-"
STREAMS = ("stdout", "stderr")


class ChannelClosed(Exception):
    """The caller went away: nobody is left to tell anything."""


class Channel(Protocol):
    """The caller's side of a session (a WebSocket, in practice)."""

    async def receive(self) -> str | bytes | None:
        """The next text or binary message; None once the caller has gone."""
        ...

    async def send_text(self, data: str) -> None:
        """Raises ChannelClosed when the caller has gone."""
        ...

    async def send_bytes(self, data: bytes) -> None:
        """Raises ChannelClosed when the caller has gone."""
        ...


class SessionError(Exception):
    """Ends a session: `message` goes to the caller, who must be allowed to see it."""

    def __init__(self, message: str, close_code: int = CLOSE_POLICY) -> None:
        super().__init__(message)
        self.message = message
        self.close_code = close_code


# -- caller messages -------------------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ExecStart(_Message):
    cmd: str = Field(min_length=1)
    args: list[str] | None = None
    envs: dict[str, str] | None = None
    cwd: str | None = None
    tag: str | None = Field(None, max_length=128)


class PtyStart(_Message):
    cmd: str = Field("/bin/bash", min_length=1)
    args: list[str] | None = None
    cols: int = Field(80, ge=1, le=65535)
    rows: int = Field(24, ge=1, le=65535)
    envs: dict[str, str] | None = None
    cwd: str | None = None
    user: str | None = None


class PtyConnect(_Message):
    tag: str | None = Field(None, min_length=1)
    pid: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_selector(self) -> PtyConnect:
        if (self.tag is None) == (self.pid is None):
            raise ValueError("send either tag or pid")
        return self


class PtyInput(_Message):
    data: str


class PtyResize(_Message):
    cols: int = Field(ge=1, le=65535)
    rows: int = Field(ge=1, le=65535)


M = TypeVar("M", bound=_Message)


def _decode(raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raise SessionError("expected a JSON text message")
    try:
        msg = json.loads(raw)
    except ValueError:
        raise SessionError("message is not valid JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise SessionError('message must be a JSON object with a string "type"')
    return msg


def _parse(model: type[M], msg: dict[str, Any]) -> M:
    try:
        return model.model_validate(msg)
    except ValidationError as e:
        problems = []
        for err in e.errors()[:5]:
            where = ".".join(str(part) for part in err.get("loc", ()))
            problems.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
        raise SessionError(f"invalid {msg['type']} message: {'; '.join(problems)}") from None


async def _first_message(channel: Channel, *types: str) -> dict[str, Any]:
    try:
        async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT):
            raw = await channel.receive()
    except TimeoutError:
        raise SessionError(f"no {' or '.join(types)} message received in time") from None
    if raw is None:
        raise ChannelClosed
    msg = _decode(raw)
    if msg["type"] not in types:
        raise SessionError(f"the first message must be of type {' or '.join(types)}")
    return msg


async def _send_json(channel: Channel, message: dict[str, Any]) -> None:
    await channel.send_text(json.dumps(message, separators=(",", ":")))


# -- the agent side --------------------------------------------------------------------------


@contextlib.contextmanager
def _agent_errors() -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as e:
        error = translate(e)
        internal = isinstance(error, HostAgentError | ServiceUnavailable)
        raise SessionError(error.message, CLOSE_INTERNAL if internal else CLOSE_POLICY) from None


class _Process:
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
        with _agent_errors():
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
        with _agent_errors():
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


async def _processes(client: AgentClient, sandbox_id: str) -> list[pb.ProcessInfo]:
    with _agent_errors():
        res = await client.list_processes(
            pb.SandboxRef(sandbox_id=sandbox_id), timeout=CONTROL_TIMEOUT
        )
    return list(res.processes)


def _output(ev: pb.ProcessEvent) -> bytes:
    """The bytes of a stdout or stderr event."""
    return ev.stdout if ev.WhichOneof("event") == "stdout" else ev.stderr


def _pick(candidates: list[pb.ProcessInfo]) -> pb.ProcessInfo | None:
    """Of processes sharing a selector, a running one before an exited one, then the newest."""
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.running, p.started_at.ToNanoseconds(), p.pid))


# -- running sessions ------------------------------------------------------------------------


async def _first_done(*coros: Coroutine[Any, Any, None]) -> None:
    """Run the coroutines until one of them finishes, then cancel the others. The failure of a
    finished one is raised."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task in done and (error := task.exception()) is not None:
            raise error


async def _send_output_text(channel: Channel, proc: _Process) -> None:
    """Forward stdout/stderr as text (UTF-8, invalid bytes replaced; a character split across
    chunks is kept whole), then the exit."""
    decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in STREAMS}
    while (ev := await proc.next_event()) is not None:
        kind = ev.WhichOneof("event")
        if kind in STREAMS:
            text = decoders[kind].decode(_output(ev))
            if text:
                await _send_json(channel, {"type": kind, "data": text})
        elif kind == "exit":
            for name, decoder in decoders.items():
                tail = decoder.decode(b"", final=True)
                if tail:
                    await _send_json(channel, {"type": name, "data": tail})
            await _send_json(channel, {"type": "exit", "exit_code": ev.exit.exit_code})
            return
    raise SessionError("the process stream ended unexpectedly", CLOSE_INTERNAL)


async def _send_output_binary(channel: Channel, proc: _Process) -> None:
    """Forward a terminal's output as binary frames, then the exit."""
    while (ev := await proc.next_event()) is not None:
        kind = ev.WhichOneof("event")
        if kind in STREAMS:
            await channel.send_bytes(_output(ev))
        elif kind == "exit":
            await _send_json(channel, {"type": "exit", "exit_code": ev.exit.exit_code})
            return
    raise SessionError("the process stream ended unexpectedly", CLOSE_INTERNAL)


async def _exec_controls(channel: Channel, proc: _Process) -> None:
    """Handle `stop` until the caller goes away. Other messages are ignored: the contract has
    no way to report a non-fatal error on this stream."""
    while (raw := await channel.receive()) is not None:
        with contextlib.suppress(SessionError):
            if _decode(raw)["type"] == "stop":
                await proc.kill()


async def _pty_controls(channel: Channel, proc: _Process) -> None:
    """Handle input, resize, kill and pong until the caller goes away. A bad message or a
    refused call is reported as a non-fatal error; the session goes on."""
    while (raw := await channel.receive()) is not None:
        try:
            if isinstance(raw, bytes):
                await proc.write(raw)
                continue
            msg = _decode(raw)
            kind = msg["type"]
            if kind == "input":
                try:
                    data = base64.b64decode(_parse(PtyInput, msg).data, validate=True)
                except binascii.Error:
                    raise SessionError("input data must be base64") from None
                await proc.write(data)
            elif kind == "resize":
                size = _parse(PtyResize, msg)
                await proc.resize(size.cols, size.rows)
            elif kind == "kill":
                await proc.kill()
            elif kind != "pong":
                raise SessionError(f"unknown message type: {kind}")
        except SessionError as e:
            await _send_json(channel, {"type": "error", "data": e.message, "fatal": False})


async def _drain(channel: Channel) -> None:
    """Read (and ignore) what the caller sends until it goes away."""
    while await channel.receive() is not None:
        pass


async def _keepalive(channel: Channel) -> None:
    while True:
        await asyncio.sleep(PING_INTERVAL)
        await _send_json(channel, {"type": "ping"})


async def _guarded(
    channel: Channel, session: Coroutine[Any, Any, int], *, pty: bool = False
) -> int:
    """Run a session; report its failure to the caller. Returns the close code."""
    try:
        return await session
    except ChannelClosed:
        return CLOSE_NORMAL
    except SessionError as e:
        message, code = e.message, e.close_code
    except Exception:
        log.exception("stream session failed")
        message, code = "internal error", CLOSE_INTERNAL
    error: dict[str, Any] = {"type": "error", "data": message}
    if pty:
        error["fatal"] = True
    with contextlib.suppress(ChannelClosed):
        await _send_json(channel, error)
    return code


async def exec_session(channel: Channel, client: AgentClient, sandbox_id: str) -> int:
    """`/exec/stream`: run one command, stream its output; kill it if the caller leaves."""
    return await _guarded(channel, _exec(channel, client, sandbox_id))


async def _exec(channel: Channel, client: AgentClient, sandbox_id: str) -> int:
    start = _parse(ExecStart, await _first_message(channel, "start"))
    request = pb.ExecRequest(
        sandbox_id=sandbox_id,
        cmd=start.cmd,
        argv=[start.cmd, *start.args] if start.args is not None else [],
        env=start.envs or {},
        cwd=start.cwd or "",
        tag=start.tag or "",
    )
    proc = _Process(client, sandbox_id, client.exec_stream(request))
    try:
        pid = await proc.started()
        await _send_json(channel, {"type": "start", "pid": pid})
        await _first_done(_send_output_text(channel, proc), _exec_controls(channel, proc))
        return CLOSE_NORMAL
    finally:
        proc.detach()
        if proc.pid and not proc.exited:
            with contextlib.suppress(SessionError):
                await proc.kill()


async def pty_session(channel: Channel, client: AgentClient, sandbox_id: str) -> int:
    """`/pty`: start or reattach to a terminal session, which outlives the socket."""
    return await _guarded(channel, _pty(channel, client, sandbox_id), pty=True)


async def _pty(channel: Channel, client: AgentClient, sandbox_id: str) -> int:
    first = await _first_message(channel, "start", "connect")
    if first["type"] == "start":
        start = _parse(PtyStart, first)
        tag = PTY_TAG_PREFIX + secrets.token_hex(4)
        request = pb.ExecRequest(
            sandbox_id=sandbox_id,
            cmd=start.cmd,
            argv=[start.cmd, *(start.args or [])],
            env=start.envs or {},
            cwd=start.cwd or "",
            user=start.user or "",
            stdin=True,
            pty=pb.PtySize(cols=start.cols, rows=start.rows),
            tag=tag,
        )
        call: ProcessCall | ConnectCall = client.exec_stream(request)
    else:
        want = _parse(PtyConnect, first)
        procs = await _processes(client, sandbox_id)
        found = _pick([p for p in procs if p.pty and (p.tag == want.tag or p.pid == want.pid)])
        if found is None:
            raise SessionError("PTY session not found")
        tag = found.tag or str(found.pid)
        ref = pb.ProcessRef(sandbox_id=sandbox_id, pid=found.pid)
        call = client.connect_process(ref)
    proc = _Process(client, sandbox_id, call)
    try:
        pid = await proc.started()
        await _send_json(channel, {"type": "started", "tag": tag, "pid": pid})
        await _first_done(
            _send_output_binary(channel, proc),
            _pty_controls(channel, proc),
            _keepalive(channel),
        )
        return CLOSE_NORMAL
    finally:
        proc.detach()


async def attach_session(
    channel: Channel, client: AgentClient, sandbox_id: str, selector: str
) -> int:
    """`/processes/{selector}/stream`: buffered then live output of the process a pid or tag
    names (an exited one too, while the capsule remembers it), then its exit. Leaving does not
    touch the process."""
    return await _guarded(channel, _attach(channel, client, sandbox_id, selector))


async def _attach(channel: Channel, client: AgentClient, sandbox_id: str, selector: str) -> int:
    procs = await _processes(client, sandbox_id)
    found = _pick([p for p in procs if selector in (str(p.pid), p.tag)])
    if found is None:
        raise SessionError("process not found")
    ref = pb.ProcessRef(sandbox_id=sandbox_id, pid=found.pid)
    proc = _Process(client, sandbox_id, client.connect_process(ref))
    try:
        await _send_json(channel, {"type": "start", "pid": await proc.started()})
        await _first_done(_send_output_text(channel, proc), _drain(channel))
        return CLOSE_NORMAL
    finally:
        proc.detach()
