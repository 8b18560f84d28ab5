"""The capsule WebSockets through the control plane over the fake host agent: the exec stream,
the PTY and reattaching to a process speak the contract's messages, turn them into the right
agent calls (ExecStream, SendStdin, ResizePty, SignalProcess, ConnectProcess), and end with the
right close codes when the caller, the process or the capsule goes away. Also REST exec, the
process list and kill, which share the process RPCs."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx_ws
import pytest
from wsproto.events import BytesMessage, TextMessage

from ..controlplane.helpers import assert_error
from ..waiting import wait_for
from .conftest import Stack
from .helpers import Account, make_capsule, new_account

WS = httpx_ws.AsyncWebSocketSession
STEP = 10.0  # seconds to wait for any one message


@contextlib.asynccontextmanager
async def open_ws(stack: Stack, path: str, headers: dict[str, str]) -> AsyncIterator[WS]:
    async with stack.ws_client() as http, httpx_ws.aconnect_ws(path, http, headers=headers) as ws:
        yield ws


async def refused(stack: Stack, path: str, headers: dict[str, str]) -> httpx.Response:
    """The HTTP answer refusing the upgrade (raised inside the transport's task group)."""
    error: BaseException | None = None
    try:
        async with open_ws(stack, path, headers):
            pass
    except* httpx_ws.WebSocketUpgradeError as group:
        error = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, httpx_ws.WebSocketUpgradeError), "the upgrade was accepted"
    return error.response


async def next_json(ws: WS) -> dict[str, Any]:
    """The next JSON message (keepalive pings skipped); terminal output is not expected."""
    while True:
        event = await ws.receive(timeout=STEP)
        assert isinstance(event, TextMessage), event
        msg: dict[str, Any] = json.loads(event.data)
        if msg["type"] != "ping":
            return msg


async def collect(ws: WS) -> tuple[list[dict[str, Any]], str, str]:
    """Messages up to the exit (or error); stdout and stderr joined."""
    msgs, out, err = [], "", ""
    while True:
        msg = await next_json(ws)
        msgs.append(msg)
        out += msg["data"] if msg["type"] == "stdout" else ""
        err += msg["data"] if msg["type"] == "stderr" else ""
        if msg["type"] in ("exit", "error"):
            return msgs, out, err


async def closed_with(ws: WS) -> int:
    with pytest.raises(httpx_ws.WebSocketDisconnect) as e:
        await ws.receive(timeout=STEP)
    return e.value.code


async def terminal_until(ws: WS, needle: bytes) -> bytes:
    """PTY output (binary frames) up to and including `needle`."""
    out = b""
    while needle not in out:
        event = await ws.receive(timeout=STEP)
        if isinstance(event, TextMessage):
            assert json.loads(event.data)["type"] == "ping", (event.data, out)
            continue
        assert isinstance(event, BytesMessage), event
        out += event.data
    return out


async def _capsule(stack: Stack) -> tuple[Account, str]:
    alice = await new_account(stack.client)
    return alice, (await make_capsule(stack.client, alice))["id"]


async def test_exec_stream_output_exit_and_args(stack: Stack) -> None:
    alice, cid = await _capsule(stack)
    url = f"/v1/capsules/{cid}/exec/stream"
    async with open_ws(stack, url, alice.h) as ws:
        await ws.send_json({"type": "start", "cmd": "echo out; echo err >&2; exit 3"})
        msgs, out, err = await collect(ws)
        assert await closed_with(ws) == 1000
    assert msgs[0]["type"] == "start" and msgs[0]["pid"] > 0
    assert (out, err) == ("out\n", "err\n")
    assert msgs[-1] == {"type": "exit", "exit_code": 3}

    # With args the command runs directly; envs and cwd reach the agent.
    async with open_ws(stack, url, alice.jwt) as ws:
        start = {"type": "start", "cmd": "echo", "args": ["a b", "$FOO"], "envs": {"FOO": "x"}}
        await ws.send_json(start)
        _, out, _ = await collect(ws)
    assert out == "a b $FOO\n"
    async with open_ws(stack, url, alice.h) as ws:
        await ws.send_json(
            {"type": "start", "cmd": "echo $FOO; pwd", "envs": {"FOO": "bar"}, "cwd": "/tmp"}
        )
        _, out, _ = await collect(ws)
    assert out == "bar\n/tmp\n"
    assert stack.agent.calls.count("ExecStream") == 3


async def test_exec_stream_stop_and_disconnect_kill_the_process(stack: Stack) -> None:
    alice, cid = await _capsule(stack)
    processes = stack.agent.sandboxes[cid].processes
    async with open_ws(stack, f"/v1/capsules/{cid}/exec/stream", alice.h) as ws:
        await ws.send_json({"type": "start", "cmd": "sleep", "args": ["300"]})
        pid = (await next_json(ws))["pid"]
        assert processes[pid].running
        await ws.send_json({"type": "stop"})
        assert await next_json(ws) == {"type": "exit", "exit_code": 137}
        assert await closed_with(ws) == 1000
    assert processes[pid].signal == 9

    async with open_ws(stack, f"/v1/capsules/{cid}/exec/stream", alice.h) as ws:
        await ws.send_json({"type": "start", "cmd": "sleep 300"})
        pid = (await next_json(ws))["pid"]
    await wait_for(lambda: not processes[pid].running, what="the process killed on disconnect")
    assert processes[pid].signal == 9


async def error_then_close(ws: WS) -> tuple[dict[str, Any], int]:
    """The error message a stream that cannot start sends, and the socket's close code."""
    return await next_json(ws), await closed_with(ws)


async def test_exec_stream_refusals(stack: Stack) -> None:
    alice, cid = await _capsule(stack)
    bob = await new_account(stack.client)
    url = f"/v1/capsules/{cid}/exec/stream"
    # Credentials that are sent but wrong refuse the upgrade with the REST answer.
    for headers in ({"X-API-Key": "wrn_" + "0" * 64}, {"Authorization": "Bearer nope"}):
        assert_error(await refused(stack, url, headers), 401, "unauthorized")
    # A stream that cannot start opens and says why in an error message (the Go system's shape):
    # another team's capsule, one that is not running.
    async with open_ws(stack, url, bob.h) as ws:
        await ws.send_json({"type": "start", "cmd": "true"})  # as the SDK does, at once
        msg, code = await error_then_close(ws)
    assert (msg, code) == ({"type": "error", "data": "capsule not found"}, 1008)
    assert (
        await stack.client.post(f"/v1/capsules/{cid}/pause", headers=alice.h)
    ).status_code == 200
    async with open_ws(stack, url, alice.h) as ws:
        msg, code = await error_then_close(ws)
    assert msg["type"] == "error" and "paused" in msg["data"] and code == 1008
    assert set(msg) == {"type", "data"}
    async with open_ws(stack, f"/v1/capsules/{cid}/pty", alice.h) as ws:
        msg, code = await error_then_close(ws)
    assert msg["type"] == "error" and msg["fatal"] is True and code == 1008
    assert "ExecStream" not in stack.agent.calls
    assert (
        await stack.client.post(f"/v1/capsules/{cid}/resume", headers=alice.h)
    ).status_code == 200
    # The capsule's host unreachable: the platform's failure, 1011.
    stack.agent.faults.unavailable = True
    try:
        async with open_ws(stack, url, alice.h) as ws:
            await ws.send_json({"type": "start", "cmd": "true"})
            msg, code = await error_then_close(ws)
    finally:
        stack.agent.faults.unavailable = False
    assert msg["type"] == "error" and code == 1011

    # A first message that is not a start, and a program the capsule does not have.
    async with open_ws(stack, url, alice.h) as ws:
        await ws.send_json({"type": "stop"})
        msg = await next_json(ws)
        assert msg["type"] == "error" and "start" in msg["data"]
        assert await closed_with(ws) == 1008
    async with open_ws(stack, url, alice.h) as ws:
        await ws.send_json({"type": "start", "cmd": "no-such-program", "args": []})
        assert await next_json(ws) == {
            "type": "error",
            "data": "program not found: no-such-program",
        }
        assert await closed_with(ws) == 1008


async def test_a_first_auth_message_authenticates_a_browser(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, cid = await _capsule(stack)
    bob = await new_account(stack.client)
    url = f"/v1/capsules/{cid}/exec/stream"
    # No credentials in the request: the first message carries them, a JWT or an API key.
    for token in (alice.token, alice.key):
        async with open_ws(stack, url, {}) as ws:
            await ws.send_json({"type": "auth", "token": token})
            await ws.send_json({"type": "start", "cmd": "echo hi"})
            msgs, out, _ = await collect(ws)
            assert await closed_with(ws) == 1000
        assert out == "hi\n" and msgs[-1] == {"type": "exit", "exit_code": 0}
    async with open_ws(stack, f"/v1/capsules/{cid}/pty", {}) as ws:
        await ws.send_json({"type": "auth", "token": alice.token})
        await ws.send_json({"type": "start", "cmd": "bash"})
        assert (await next_json(ws))["type"] == "started"
    # Another team's token finds no capsule; a bad token, a message of another type, no token.
    async with open_ws(stack, url, {}) as ws:
        await ws.send_json({"type": "auth", "token": bob.key})
        assert await error_then_close(ws) == ({"type": "error", "data": "capsule not found"}, 1008)
    for first in (
        {"type": "auth", "token": "not-a-jwt"},
        {"type": "auth", "token": "wrn_" + "0" * 64},
        {"type": "start", "cmd": "echo hi"},
        {"type": "auth"},
    ):
        async with open_ws(stack, url, {}) as ws:
            await ws.send_json(first)
            msg, code = await error_then_close(ws)
        assert msg["type"] == "error" and msg["data"].startswith("authentication failed"), first
        assert code == 1008
    # Nothing sent: the socket is not held open past the deadline.
    monkeypatch.setattr("wrenn_server.controlplane.api.ws.AUTH_MESSAGE_TIMEOUT", 0.5)
    async with open_ws(stack, url, {}) as ws:
        msg, code = await error_then_close(ws)
    assert msg["type"] == "error" and "auth" in msg["data"] and code == 1008
    assert stack.agent.calls.count("ExecStream") == 3


async def test_a_capsule_dying_ends_its_streams(stack: Stack) -> None:
    alice, cid = await _capsule(stack)
    async with open_ws(stack, f"/v1/capsules/{cid}/exec/stream", alice.h) as ws:
        await ws.send_json({"type": "start", "cmd": "sleep 300"})
        assert (await next_json(ws))["type"] == "start"
        stack.agent.kill(cid, "out of memory")
        msg = await next_json(ws)
        assert msg["type"] == "error"
        assert "is dead" in msg["data"] and "out of memory" in msg["data"]
        assert await closed_with(ws) == 1008


async def test_pty_input_resize_kill_and_reconnect(stack: Stack) -> None:
    alice, cid = await _capsule(stack)
    url = f"/v1/capsules/{cid}/pty"
    async with open_ws(stack, url, alice.h) as ws:
        await ws.send_json({"type": "start", "cmd": "bash", "cols": 80, "rows": 24})
        started = await next_json(ws)
        assert started["type"] == "started" and started["tag"].startswith("pty-")
        await ws.send_bytes(b"echo hi\n")
        assert b"hi\r\n" in await terminal_until(ws, b"hi\r\n$ ")
        await ws.send_json({"type": "resize", "cols": 100, "rows": 40})
        await ws.send_json({"type": "input", "data": base64.b64encode(b"stty size\n").decode()})
        assert b"40 100\r\n" in await terminal_until(ws, b"40 100\r\n$ ")
        await ws.send_json({"type": "input", "data": "not base64!"})
        assert await next_json(ws) == {
            "type": "error",
            "data": "input data must be base64",
            "fatal": False,
        }
    # The terminal outlives the socket; `connect` replays what it printed, then goes on.
    proc = stack.agent.sandboxes[cid].processes[started["pid"]]
    assert proc.running and proc.spec.pty == (80, 24) and proc.size == (100, 40)
    async with open_ws(stack, url, alice.h) as ws:
        await ws.send_json({"type": "connect", "tag": started["tag"]})
        again = await next_json(ws)
        assert (again["type"], again["pid"], again["tag"]) == ("started", proc.pid, started["tag"])
        assert b"40 100\r\n" in await terminal_until(ws, b"40 100\r\n$ ")
        await ws.send_json({"type": "kill"})
        while (msg := await next_json(ws))["type"] != "exit":
            pass
        assert msg == {"type": "exit", "exit_code": 137}
        assert await closed_with(ws) == 1000
    async with open_ws(stack, url, alice.h) as ws:
        await ws.send_json({"type": "connect", "tag": "pty-nope"})
        assert await next_json(ws) == {
            "type": "error",
            "data": "PTY session not found",
            "fatal": True,
        }
    calls = set(stack.agent.calls)
    assert {"ExecStream", "SendStdin", "ResizePty", "ListProcesses", "ConnectProcess"} <= calls
    assert "SignalProcess" in calls


async def test_background_process_reattach_list_and_kill(stack: Stack) -> None:
    api = stack.client
    alice, cid = await _capsule(stack)
    started = await api.post(
        f"/v1/capsules/{cid}/exec",
        json={"cmd": "echo one; sleep 300", "background": True, "tag": "worker"},
        headers=alice.h,
    )
    assert started.status_code == 202, started.text
    pid = started.json()["pid"]
    listed = await api.get(f"/v1/capsules/{cid}/processes", headers=alice.h)
    assert [(p["pid"], p["tag"]) for p in listed.json()["processes"]] == [(pid, "worker")]

    async with open_ws(stack, f"/v1/capsules/{cid}/processes/worker/stream", alice.h) as ws:
        assert await next_json(ws) == {"type": "start", "pid": pid}
        assert await next_json(ws) == {"type": "stdout", "data": "one\n"}
        killed = await api.delete(f"/v1/capsules/{cid}/processes/worker", headers=alice.h)
        assert killed.status_code == 204
        assert await next_json(ws) == {"type": "exit", "exit_code": 137}
        assert await closed_with(ws) == 1000
    listed = await api.get(f"/v1/capsules/{cid}/processes", headers=alice.h)
    assert listed.json()["processes"] == []
    gone = await api.delete(f"/v1/capsules/{cid}/processes/worker", headers=alice.h)
    assert_error(gone, 404, "not_found")


async def test_rest_exec_results_timeouts_and_truncation(stack: Stack) -> None:
    api = stack.client
    alice, cid = await _capsule(stack)

    async def run(**body: Any) -> httpx.Response:
        return await api.post(f"/v1/capsules/{cid}/exec", json=body, headers=alice.h)

    done = (await run(cmd="echo out; echo err >&2; exit 4")).json()
    assert (done["stdout"], done["stderr"], done["exit_code"]) == ("out\n", "err\n", 4)
    assert done["sandbox_id"] == cid
    # Past its timeout the command is killed and the call fails, as in the Go system.
    slow = await run(cmd="sleep", args=["300"], timeout_sec=1)
    assert "timed out after 1 s" in assert_error(slow, 502, "agent_error")["message"]
    assert [p for p in stack.agent.sandboxes[cid].processes.values() if p.running] == []
    missing = await run(cmd="no-such-program", args=[])
    assert_error(missing, 400, "invalid_request")
