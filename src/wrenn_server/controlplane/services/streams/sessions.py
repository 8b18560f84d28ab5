"""The three stream sessions (exec stream, PTY, reattach), each pumping between the caller's
channel and one process in the capsule until either side ends; see the package docstring for
their messages."""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import logging
import secrets
from collections.abc import Coroutine
from typing import Any

from ....agentproto.client import AgentClient, ConnectCall, ProcessCall
from ....proto.hostagent.v1 import hostagent_pb2 as pb
from .channel import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    Channel,
    ChannelClosed,
    SessionError,
    send_json,
)
from .messages import (
    ExecStart,
    PtyConnect,
    PtyInput,
    PtyResize,
    PtyStart,
    decode,
    first_message,
    parse,
)
from .process import Process, output, pick, processes

log = logging.getLogger(__name__)

PING_INTERVAL = 30.0  # seconds between keepalive pings on a PTY session

PTY_TAG_PREFIX = "pty-"
STREAMS = ("stdout", "stderr")


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


async def _send_output_text(channel: Channel, proc: Process) -> None:
    """Forward stdout/stderr as text (UTF-8, invalid bytes replaced; a character split across
    chunks is kept whole), then the exit."""
    decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in STREAMS}
    while (ev := await proc.next_event()) is not None:
        kind = ev.WhichOneof("event")
        if kind in STREAMS:
            text = decoders[kind].decode(output(ev))
            if text:
                await send_json(channel, {"type": kind, "data": text})
        elif kind == "exit":
            for name, decoder in decoders.items():
                tail = decoder.decode(b"", final=True)
                if tail:
                    await send_json(channel, {"type": name, "data": tail})
            await send_json(channel, {"type": "exit", "exit_code": ev.exit.exit_code})
            return
    raise SessionError("the process stream ended unexpectedly", CLOSE_INTERNAL)


async def _send_output_binary(channel: Channel, proc: Process) -> None:
    """Forward a terminal's output as binary frames, then the exit."""
    while (ev := await proc.next_event()) is not None:
        kind = ev.WhichOneof("event")
        if kind in STREAMS:
            await channel.send_bytes(output(ev))
        elif kind == "exit":
            await send_json(channel, {"type": "exit", "exit_code": ev.exit.exit_code})
            return
    raise SessionError("the process stream ended unexpectedly", CLOSE_INTERNAL)


async def _exec_controls(channel: Channel, proc: Process) -> None:
    """Handle `stop` until the caller goes away. Other messages are ignored: the contract has
    no way to report a non-fatal error on this stream."""
    while (raw := await channel.receive()) is not None:
        with contextlib.suppress(SessionError):
            if decode(raw)["type"] == "stop":
                await proc.kill()


async def _pty_controls(channel: Channel, proc: Process) -> None:
    """Handle input, resize, kill and pong until the caller goes away. A bad message or a
    refused call is reported as a non-fatal error; the session goes on."""
    while (raw := await channel.receive()) is not None:
        try:
            if isinstance(raw, bytes):
                await proc.write(raw)
                continue
            msg = decode(raw)
            kind = msg["type"]
            if kind == "input":
                try:
                    data = base64.b64decode(parse(PtyInput, msg).data, validate=True)
                except binascii.Error:
                    raise SessionError("input data must be base64") from None
                await proc.write(data)
            elif kind == "resize":
                size = parse(PtyResize, msg)
                await proc.resize(size.cols, size.rows)
            elif kind == "kill":
                await proc.kill()
            elif kind != "pong":
                raise SessionError(f"unknown message type: {kind}")
        except SessionError as e:
            await send_json(channel, {"type": "error", "data": e.message, "fatal": False})


async def _drain(channel: Channel) -> None:
    """Read (and ignore) what the caller sends until it goes away."""
    while await channel.receive() is not None:
        pass


async def _keepalive(channel: Channel) -> None:
    while True:
        await asyncio.sleep(PING_INTERVAL)
        await send_json(channel, {"type": "ping"})


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
        await send_json(channel, error)
    return code


async def exec_session(channel: Channel, client: AgentClient, sandbox_id: str) -> int:
    """`/exec/stream`: run one command, stream its output; kill it if the caller leaves."""
    return await _guarded(channel, _exec(channel, client, sandbox_id))


async def _exec(channel: Channel, client: AgentClient, sandbox_id: str) -> int:
    start = parse(ExecStart, await first_message(channel, "start"))
    request = pb.ExecRequest(
        sandbox_id=sandbox_id,
        cmd=start.cmd,
        argv=[start.cmd, *start.args] if start.args is not None else [],
        env=start.envs or {},
        cwd=start.cwd or "",
        tag=start.tag or "",
        user=start.user or "",
    )
    proc = Process(client, sandbox_id, client.exec_stream(request))
    try:
        pid = await proc.started()
        await send_json(channel, {"type": "start", "pid": pid})
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
    first = await first_message(channel, "start", "connect")
    if first["type"] == "start":
        start = parse(PtyStart, first)
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
        want = parse(PtyConnect, first)
        procs = await processes(client, sandbox_id)
        found = pick([p for p in procs if p.pty and (p.tag == want.tag or p.pid == want.pid)])
        if found is None:
            raise SessionError("PTY session not found")
        tag = found.tag or str(found.pid)
        ref = pb.ProcessRef(sandbox_id=sandbox_id, pid=found.pid)
        call = client.connect_process(ref)
    proc = Process(client, sandbox_id, call)
    try:
        pid = await proc.started()
        await send_json(channel, {"type": "started", "tag": tag, "pid": pid})
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
    procs = await processes(client, sandbox_id)
    found = pick([p for p in procs if selector in (str(p.pid), p.tag)])
    if found is None:
        raise SessionError("process not found")
    ref = pb.ProcessRef(sandbox_id=sandbox_id, pid=found.pid)
    proc = Process(client, sandbox_id, client.connect_process(ref))
    try:
        await send_json(channel, {"type": "start", "pid": await proc.started()})
        await _first_done(_send_output_text(channel, proc), _drain(channel))
        return CLOSE_NORMAL
    finally:
        proc.detach()
