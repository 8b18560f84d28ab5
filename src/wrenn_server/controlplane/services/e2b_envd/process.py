"""`process.Process` (E2B's envd process service) over the host agent's process RPCs: Start is
ExecStream (the command, its environment, directory, user, tag, stdin and terminal), Connect is
ConnectProcess, input, stdin's end, signals and terminal sizes go to their RPCs. As envd does,
Start's deadline (the SDK's command `timeout`) kills the process when it passes, whether or not
the client is still there; a client that leaves early leaves the process running until then."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from ....proto.e2b.process import process_pb2 as e2b
from ....proto.hostagent.v1 import hostagent_pb2 as pb
from ...errors import BadRequest, NotFound
from .errors import as_connect
from .pacing import KEEPALIVE, DeadlinePassed, keepalive_interval, paced
from .target import Envd, Opener, basic_user

MAX_PTY_SIDE = 10_000
_SIGNALS = {e2b.SIGNAL_SIGKILL: signal.SIGKILL, e2b.SIGNAL_SIGTERM: signal.SIGTERM}
_Event = e2b.ProcessEvent


class ProcessService:
    """One request's service: the capsule is found (and the caller checked) on first use."""

    def __init__(self, open_envd: Opener, gone: asyncio.Event) -> None:
        self._open = open_envd
        self._gone = gone  # set when the client leaves

    async def list(
        self, request: e2b.ListRequest, ctx: RequestContext[e2b.ListRequest, e2b.ListResponse]
    ) -> e2b.ListResponse:
        with as_connect():
            envd = await self._open()
            running = await _running(envd)
        return e2b.ListResponse(
            processes=[
                e2b.ProcessInfo(
                    config=e2b.ProcessConfig(cmd=p.cmd, args=p.args, cwd=p.cwd or None),
                    pid=p.pid,
                    tag=p.tag or None,
                )
                for p in running
            ]
        )

    def start(
        self,
        request: e2b.StartRequest,
        ctx: RequestContext[e2b.StartRequest, e2b.StartResponse],
    ) -> AsyncIterator[e2b.StartResponse]:
        return self._start(request, ctx)

    async def _start(
        self,
        request: e2b.StartRequest,
        ctx: RequestContext[e2b.StartRequest, e2b.StartResponse],
    ) -> AsyncIterator[e2b.StartResponse]:
        with as_connect(not_found=BadRequest):
            envd = await self._open()
            exec_request = _exec_request(envd, request, ctx)
            timeout_ms = ctx.timeout_ms
            loop = asyncio.get_running_loop()
            deadline = None if timeout_ms is None else loop.time() + timeout_ms / 1000
            call = envd.client.exec_stream(exec_request)
            is_pty = request.HasField("pty")
            pid: int | None = None
            ended = False
            try:
                async for event in paced(
                    call, keepalive_interval(ctx.request_headers), timeout_ms, self._gone
                ):
                    if event is KEEPALIVE:
                        yield e2b.StartResponse(event=_Event(keepalive=_Event.KeepAlive()))
                        continue
                    assert isinstance(event, pb.ProcessEvent)
                    if event.WhichOneof("event") == "start":
                        pid = event.start.pid
                    converted = _event(event, is_pty)
                    yield e2b.StartResponse(event=converted)
                    if converted.WhichOneof("event") == "end":
                        ended = True
                        return
            except DeadlinePassed:
                ended = True
                if pid is not None:
                    await _kill_quietly(envd, pid)
                raise ConnectError(
                    Code.DEADLINE_EXCEEDED, "the command's timeout passed: it was killed"
                ) from None
            finally:
                call.cancel()
                if not ended and pid is not None and deadline is not None:
                    # The client left first: the timeout still ends the process, as envd's does.
                    _kill_at(envd, pid, deadline)
            if self._gone.is_set():
                return
        raise ConnectError(Code.UNAVAILABLE, "the process stream ended before the process")

    def connect(
        self,
        request: e2b.ConnectRequest,
        ctx: RequestContext[e2b.ConnectRequest, e2b.ConnectResponse],
    ) -> AsyncIterator[e2b.ConnectResponse]:
        return self._connect(request, ctx)

    async def _connect(
        self,
        request: e2b.ConnectRequest,
        ctx: RequestContext[e2b.ConnectRequest, e2b.ConnectResponse],
    ) -> AsyncIterator[e2b.ConnectResponse]:
        with as_connect():
            envd = await self._open()
            info = await _select(envd, request.process)
            call = envd.client.connect_process(
                pb.ProcessRef(sandbox_id=envd.capsule_id, pid=info.pid)
            )
            try:
                async for event in paced(
                    call, keepalive_interval(ctx.request_headers), ctx.timeout_ms, self._gone
                ):
                    if event is KEEPALIVE:
                        yield e2b.ConnectResponse(event=_Event(keepalive=_Event.KeepAlive()))
                        continue
                    assert isinstance(event, pb.ProcessEvent)
                    converted = _event(event, info.pty)
                    yield e2b.ConnectResponse(event=converted)
                    if converted.WhichOneof("event") == "end":
                        return
            except DeadlinePassed:
                raise ConnectError(Code.DEADLINE_EXCEEDED, "the stream's timeout passed") from None
            finally:
                call.cancel()
        raise ConnectError(Code.UNAVAILABLE, "the process stream ended before the process")

    async def update(
        self, request: e2b.UpdateRequest, ctx: RequestContext[e2b.UpdateRequest, e2b.UpdateResponse]
    ) -> e2b.UpdateResponse:
        with as_connect():
            envd = await self._open()
            info = await _select(envd, request.process)
            if request.HasField("pty"):
                size = _pty_size(request.pty)
                await envd.client.resize_pty(
                    pb.ResizePtyRequest(sandbox_id=envd.capsule_id, pid=info.pid, size=size)
                )
        return e2b.UpdateResponse()

    async def stream_input(
        self,
        request: AsyncIterator[e2b.StreamInputRequest],
        ctx: RequestContext[e2b.StreamInputRequest, e2b.StreamInputResponse],
    ) -> e2b.StreamInputResponse:
        with as_connect():
            envd = await self._open()
            pid: int | None = None
            async for message in request:
                kind = message.WhichOneof("event")
                if kind == "start":
                    pid = (await _select(envd, message.start.process)).pid
                elif kind == "data":
                    if pid is None:
                        raise BadRequest("the input stream must start with a start event")
                    await _send(envd, pid, message.data.input)
        return e2b.StreamInputResponse()

    async def send_input(
        self,
        request: e2b.SendInputRequest,
        ctx: RequestContext[e2b.SendInputRequest, e2b.SendInputResponse],
    ) -> e2b.SendInputResponse:
        with as_connect():
            envd = await self._open()
            pid = await _pid(envd, request.process)
            await _send(envd, pid, request.input)
        return e2b.SendInputResponse()

    async def send_signal(
        self,
        request: e2b.SendSignalRequest,
        ctx: RequestContext[e2b.SendSignalRequest, e2b.SendSignalResponse],
    ) -> e2b.SendSignalResponse:
        sig = _SIGNALS.get(request.signal)
        if sig is None:
            raise ConnectError(Code.INVALID_ARGUMENT, "signal must be SIGKILL or SIGTERM")
        with as_connect():
            envd = await self._open()
            info = await _select(envd, request.process)
            await envd.client.signal_process(
                pb.SignalProcessRequest(sandbox_id=envd.capsule_id, pid=info.pid, signal=sig)
            )
        return e2b.SendSignalResponse()

    async def close_stdin(
        self,
        request: e2b.CloseStdinRequest,
        ctx: RequestContext[e2b.CloseStdinRequest, e2b.CloseStdinResponse],
    ) -> e2b.CloseStdinResponse:
        with as_connect():
            envd = await self._open()
            pid = await _pid(envd, request.process)
            await envd.client.close_stdin(pb.ProcessRef(sandbox_id=envd.capsule_id, pid=pid))
        return e2b.CloseStdinResponse()


def _exec_request(
    envd: Envd,
    request: e2b.StartRequest,
    ctx: RequestContext[e2b.StartRequest, e2b.StartResponse],
) -> pb.ExecRequest:
    config = request.process
    if not config.cmd:
        raise BadRequest("process.cmd is required")
    exec_request = pb.ExecRequest(
        sandbox_id=envd.capsule_id,
        argv=[config.cmd, *config.args],
        env=dict(config.envs),
        cwd=config.cwd,
        user=basic_user(ctx.request_headers.get("authorization")),
        # Unset is true, as envd has it for SDKs from before the field.
        stdin=request.stdin if request.HasField("stdin") else True,
        tag=request.tag,
    )
    if request.HasField("pty"):
        exec_request.pty.CopyFrom(_pty_size(request.pty))
        exec_request.stdin = True  # a terminal's input is its stdin
    return exec_request


def _pty_size(pty: e2b.PTY) -> pb.PtySize:
    cols, rows = pty.size.cols, pty.size.rows
    if not (1 <= cols <= MAX_PTY_SIDE and 1 <= rows <= MAX_PTY_SIDE):
        raise BadRequest(f"pty size must be between 1 and {MAX_PTY_SIDE} columns and rows")
    return pb.PtySize(cols=cols, rows=rows)


def _event(event: pb.ProcessEvent, is_pty: bool) -> e2b.ProcessEvent:
    kind = event.WhichOneof("event")
    if kind == "start":
        return _Event(start=_Event.StartEvent(pid=event.start.pid))
    if kind == "stdout":
        data = (
            _Event.DataEvent(pty=event.stdout) if is_pty else _Event.DataEvent(stdout=event.stdout)
        )
        return _Event(data=data)
    if kind == "stderr":
        return _Event(data=_Event.DataEvent(stderr=event.stderr))
    if kind == "exit":
        return _Event(end=_end(event.exit))
    return _Event(keepalive=_Event.KeepAlive())


def _end(exit_: pb.ProcessEvent.Exit) -> e2b.ProcessEvent.EndEvent:
    """As envd (Go's os.ProcessState) says it: a signalled process did not exit, its code is -1
    and its status names the signal."""
    if exit_.signal:
        try:
            name = (signal.strsignal(exit_.signal) or str(exit_.signal)).lower()
        except ValueError:
            name = str(exit_.signal)
        return _Event.EndEvent(exit_code=-1, exited=False, status=f"signal: {name}")
    return _Event.EndEvent(
        exit_code=exit_.exit_code, exited=True, status=f"exit status {exit_.exit_code}"
    )


async def _running(envd: Envd) -> list[pb.ProcessInfo]:
    res = await envd.client.list_processes(pb.SandboxRef(sandbox_id=envd.capsule_id))
    return [p for p in res.processes if p.running]


async def _select(envd: Envd, selector: e2b.ProcessSelector) -> pb.ProcessInfo:
    """The running process the selector names (by pid or tag), else not found."""
    kind = selector.WhichOneof("selector")
    if kind is None:
        raise BadRequest("process selector (pid or tag) is required")
    for info in await _running(envd):
        if (kind == "pid" and info.pid == selector.pid) or (
            kind == "tag" and info.tag == selector.tag
        ):
            return info
    named = f"pid {selector.pid}" if kind == "pid" else f"tag '{selector.tag}'"
    raise NotFound(f"process with {named} not found")


async def _pid(envd: Envd, selector: e2b.ProcessSelector) -> int:
    """A pid selector as it is (input goes straight on: the agent says if it has exited); a tag
    looked up."""
    if selector.WhichOneof("selector") == "pid":
        return selector.pid
    return (await _select(envd, selector)).pid


async def _send(envd: Envd, pid: int, data: e2b.ProcessInput) -> None:
    kind = data.WhichOneof("input")
    payload = data.stdin if kind == "stdin" else data.pty if kind == "pty" else b""
    if payload:
        await envd.client.send_stdin(
            pb.SendStdinRequest(sandbox_id=envd.capsule_id, pid=pid, data=payload)
        )


# Kills waiting for their deadline (a reference, so they are not collected before they run).
_KILLS: set[asyncio.Task[None]] = set()


def _kill_at(envd: Envd, pid: int, deadline: float) -> None:
    """Kill the process at the event loop time `deadline` if it is still the one that was
    started (its start time unchanged: a pid reused by then is left alone)."""

    async def kill() -> None:
        with contextlib.suppress(Exception):
            started = {p.pid: p.started_at for p in await _running(envd)}.get(pid)
            if started is None:
                return
            await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
            now = {p.pid: p.started_at for p in await _running(envd)}.get(pid)
            if now is not None and now == started:
                await _kill_quietly(envd, pid)

    task = asyncio.create_task(kill())
    _KILLS.add(task)
    task.add_done_callback(_KILLS.discard)


async def _kill_quietly(envd: Envd, pid: int) -> None:
    """The deadline's kill: a process already gone, or an agent that fails, changes nothing
    about what the caller is told."""
    with contextlib.suppress(Exception):
        await envd.client.signal_process(
            pb.SignalProcessRequest(sandbox_id=envd.capsule_id, pid=pid, signal=signal.SIGKILL)
        )
