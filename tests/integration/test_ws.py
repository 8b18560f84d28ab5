"""Capsule WebSockets end to end: the control plane served by uvicorn on a local port, a real host
agent, real capsules; clients are httpx-ws, as in the SDK."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import httpx_ws
import pytest
from pydantic import SecretStr
from wsproto.events import BytesMessage, TextMessage

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.services.streams import messages, sessions
from wrenn_server.controlplane.settings import Settings

from ..served import served
from .conftest import SECRET, AgentProcess, wait_for

pytestmark = pytest.mark.integration

WS = httpx_ws.AsyncWebSocketSession
STEP = 30.0  # seconds to wait for any one message


@dataclass
class Stack:
    base_url: str
    token: str  # user JWT of team A
    key: str  # API key of team A
    other_key: str  # API key of team B
    capsule_id: str  # a running capsule of team A

    def client(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=60)

    def team_a(self) -> httpx.AsyncClient:
        return self.client(**{"X-API-Key": self.key})


async def _account(http: httpx.AsyncClient, name: str) -> tuple[str, str]:
    """Sign up a user (with a team) and make an API key; returns (JWT, API key)."""
    email = f"{name}-{secrets.token_hex(4)}@example.com"
    r = await http.post(
        "/v1/auth/signup", json={"email": email, "password": "ws-test-password", "name": name}
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    r = await http.post(
        "/v1/api-keys", json={"name": "ws"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 201, r.text
    return token, r.json()["key"]


@pytest.fixture(scope="module")
async def stack(
    agent_process: AgentProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("controlplane")
    settings = Settings(
        data_dir=data_dir,
        dev_mode=True,
        agent_address=agent_process.target,
        agent_secret=SecretStr(SECRET),
        reconcile_interval_sec=0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), contextlib.AsyncExitStack() as stack:
        base_url = await stack.enter_async_context(served(app, ws="wsproto"))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=120))
        token, key = await _account(http, "alice")
        _, other_key = await _account(http, "bob")
        r = await http.post("/v1/capsules", json={}, headers={"X-API-Key": key})
        assert r.status_code == 201, r.text
        capsule_id = r.json()["id"]
        try:
            yield Stack(base_url, token, key, other_key, capsule_id)
        finally:
            r = await http.delete(f"/v1/capsules/{capsule_id}", headers={"X-API-Key": key})
            assert r.status_code == 204, r.text


# -- helpers -----------------------------------------------------------------------------------


async def next_json(ws: WS) -> dict[str, Any]:
    """The next JSON control message (a PTY's keepalive pings are skipped)."""
    while True:
        event = await ws.receive(timeout=STEP)
        assert isinstance(event, TextMessage), event
        msg: dict[str, Any] = json.loads(event.data)
        if msg["type"] != "ping":
            return msg


async def next_control(ws: WS) -> dict[str, Any]:
    """The next JSON message of a PTY session, skipping terminal output and pings."""
    while True:
        event = await ws.receive(timeout=STEP)
        if isinstance(event, TextMessage):
            msg: dict[str, Any] = json.loads(event.data)
            if msg["type"] != "ping":
                return msg


async def collect(ws: WS) -> tuple[list[dict[str, Any]], str, str]:
    """Messages of an exec/reattach stream up to the exit; checks the socket closes after it."""
    msgs, out, err = [], "", ""
    while True:
        msg = await next_json(ws)
        msgs.append(msg)
        if msg["type"] == "stdout":
            out += msg["data"]
        elif msg["type"] == "stderr":
            err += msg["data"]
        elif msg["type"] in ("exit", "error"):
            break
    await assert_closed(ws)
    return msgs, out, err


async def assert_closed(ws: WS) -> int:
    with pytest.raises(httpx_ws.WebSocketDisconnect) as e:
        await ws.receive(timeout=STEP)
    return e.value.code


async def read_pty_until(ws: WS, needle: bytes) -> bytes:
    """Terminal output up to and including `needle` (control messages must not interleave)."""
    out = b""
    while needle not in out:
        event = await ws.receive(timeout=STEP)
        if isinstance(event, TextMessage):
            msg = json.loads(event.data)
            assert msg["type"] == "ping", (msg, out)
            continue
        assert isinstance(event, BytesMessage), event
        out += event.data
    return out


async def exec_via_rest(stack: Stack, cmd: str, **body: Any) -> httpx.Response:
    async with stack.team_a() as http:
        return await http.post(f"/v1/capsules/{stack.capsule_id}/exec", json={"cmd": cmd, **body})


async def running_pids(stack: Stack) -> set[int]:
    async with stack.team_a() as http:
        r = await http.get(f"/v1/capsules/{stack.capsule_id}/processes")
    assert r.status_code == 200, r.text
    return {p["pid"] for p in r.json()["processes"]}


def open_ws(http: httpx.AsyncClient, url: str) -> contextlib.AbstractAsyncContextManager[WS]:
    return cast(contextlib.AbstractAsyncContextManager[WS], httpx_ws.aconnect_ws(url, http))


def path(stack: Stack, tail: str) -> str:
    return f"/v1/capsules/{stack.capsule_id}/{tail}"


# -- exec/stream -------------------------------------------------------------------------------


async def test_exec_stream_output_and_exit(stack: Stack) -> None:
    async with stack.team_a() as http:
        async with open_ws(http, path(stack, "exec/stream")) as ws:
            await ws.send_json({"type": "start", "cmd": "echo out; echo err >&2; exit 3"})
            msgs, out, err = await collect(ws)
        assert msgs[0]["type"] == "start" and msgs[0]["pid"] > 0
        assert (out, err) == ("out\n", "err\n")
        assert msgs[-1] == {"type": "exit", "exit_code": 3}

        # With args, the command runs directly (no shell); envs and cwd apply.
        async with open_ws(http, path(stack, "exec/stream")) as ws:
            start = {"cmd": "printf", "args": ["%s|", "a b", "$HOME"], "type": "start"}
            await ws.send_json(start)
            msgs, out, _ = await collect(ws)
        assert out == "a b|$HOME|" and msgs[-1]["exit_code"] == 0

        async with open_ws(http, path(stack, "exec/stream")) as ws:
            await ws.send_json(
                {"type": "start", "cmd": "echo $FOO; pwd", "envs": {"FOO": "bar"}, "cwd": "/tmp"}
            )
            _, out, _ = await collect(ws)
        assert out == "bar\n/tmp\n"

        # Multi-byte characters split across writes arrive whole; invalid bytes are replaced.
        async with open_ws(http, path(stack, "exec/stream")) as ws:
            cmd = r"printf '\303'; sleep 0.3; printf '\251\n\377\n'"
            await ws.send_json({"type": "start", "cmd": cmd})
            _, out, _ = await collect(ws)
        assert out == "é\n\ufffd\n"


async def test_exec_stream_with_bearer_token(stack: Stack) -> None:
    async with stack.client(Authorization=f"Bearer {stack.token}") as http:
        async with open_ws(http, path(stack, "exec/stream")) as ws:
            await ws.send_json({"type": "start", "cmd": "echo via-jwt"})
            _, out, _ = await collect(ws)
    assert out == "via-jwt\n"


async def test_exec_stream_stop_kills_process_tree(stack: Stack) -> None:
    async with stack.team_a() as http, open_ws(http, path(stack, "exec/stream")) as ws:
        await ws.send_json({"type": "start", "cmd": "sleep 300 & echo $!; wait"})
        start = await next_json(ws)
        first = await next_json(ws)
        assert first["type"] == "stdout", first
        child = int(first["data"])
        assert {start["pid"], child} <= await running_pids(stack) | {child}
        await ws.send_json({"type": "stop"})
        exit_ = await next_json(ws)
        assert exit_ == {"type": "exit", "exit_code": 137}
        assert await assert_closed(ws) == 1000

    async def child_gone() -> bool:
        r = await exec_via_rest(stack, f"kill -0 {child} 2>/dev/null && echo alive || echo gone")
        return bool(r.json()["stdout"] == "gone\n")

    await wait_for(child_gone, 20, interval=0.2, what="the child gone")


async def test_exec_stream_disconnect_kills_process(stack: Stack) -> None:
    async with stack.team_a() as http:
        async with open_ws(http, path(stack, "exec/stream")) as ws:
            await ws.send_json({"type": "start", "cmd": "sleep", "args": ["300"]})
            pid = (await next_json(ws))["pid"]
            assert pid in await running_pids(stack)

    async def gone() -> bool:
        return pid not in await running_pids(stack)

    await wait_for(gone, 20, interval=0.2, what="the process gone")


async def test_exec_stream_bad_first_message(stack: Stack) -> None:
    cases: list[tuple[str | bytes, str]] = [
        ("not json", "not valid JSON"),
        ("[1, 2]", '"type"'),
        (json.dumps({"type": "stop"}), "first message must be of type start"),
        (json.dumps({"type": "start"}), "invalid start message: cmd"),
        (json.dumps({"type": "start", "cmd": "x", "args": "notalist"}), "args"),
        (b"\x00binary", "expected a JSON text message"),
        (json.dumps({"type": "start", "cmd": "no-such-binary", "args": []}), "program not found"),
        (json.dumps({"type": "start", "cmd": "true", "cwd": "/nope"}), "cwd"),
    ]
    async with stack.team_a() as http:
        for message, expected in cases:
            async with open_ws(http, path(stack, "exec/stream")) as ws:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_text(message)
                msg = await next_json(ws)
                assert msg["type"] == "error", (message, msg)
                assert expected in msg["data"], (message, msg)
                assert await assert_closed(ws) == 1008, message


# -- pty ---------------------------------------------------------------------------------------


async def test_pty_tty_resize_exit(stack: Stack) -> None:
    async with stack.team_a() as http, open_ws(http, path(stack, "pty")) as ws:
        await ws.send_json({"type": "start", "cmd": "/bin/sh", "cols": 100, "rows": 30})
        started = await next_json(ws)
        assert started["type"] == "started" and started["pid"] > 0
        assert started["tag"].startswith("pty-") and len(started["tag"]) == 12
        await ws.send_bytes(b"tty; stty size; echo $TERM\n")  # raw input, as the SDK writes
        # One read up to the last line: the three answers may arrive in one chunk or several.
        out = await read_pty_until(ws, b"xterm")
        assert b"/dev/pts/" in out and b"30 100" in out, out
        await ws.send_json({"type": "resize", "cols": 120, "rows": 40})
        line = base64.b64encode(b"stty size; exit 7\n").decode()  # the contract's input message
        await ws.send_json({"type": "input", "data": line})
        await read_pty_until(ws, b"40 120")
        assert await next_control(ws) == {"type": "exit", "exit_code": 7}
        assert await assert_closed(ws) == 1000


async def test_pty_persists_reconnects_and_kill(stack: Stack) -> None:
    async with stack.team_a() as http:
        async with open_ws(http, path(stack, "pty")) as ws:
            await ws.send_json({"type": "start", "envs": {"MARK": "mark"}})  # default /bin/bash
            started = await next_json(ws)
            tag, pid = started["tag"], started["pid"]
            await ws.send_bytes(b'echo "$0 $MARK$((40+2))"\n')
            assert b"bash mark42" in await read_pty_until(ws, b"mark42")
            # A bad message is a non-fatal error: the session goes on.
            await ws.send_json({"type": "bogus"})
            assert await next_control(ws) == {
                "type": "error",
                "data": "unknown message type: bogus",
                "fatal": False,
            }
            await ws.send_json({"type": "resize", "cols": 0, "rows": 10})
            error = await next_control(ws)
            assert error["type"] == "error" and error["fatal"] is False and "cols" in error["data"]
            await ws.send_json({"type": "input", "data": "%%%"})
            assert await next_control(ws) == {
                "type": "error",
                "data": "input data must be base64",
                "fatal": False,
            }
            await ws.send_bytes(b"echo still$((2+3))\n")
            await read_pty_until(ws, b"still5")
        # The session outlives the socket.
        await asyncio.sleep(0.5)
        assert pid in await running_pids(stack)

        async with open_ws(http, path(stack, "pty")) as ws:
            await ws.send_json({"type": "connect", "tag": tag})
            assert await next_json(ws) == {"type": "started", "tag": tag, "pid": pid}
            await read_pty_until(ws, b"mark42")  # replayed
            await ws.send_bytes(b"echo again$((1+1))\n")
            await read_pty_until(ws, b"again2")
        async with open_ws(http, path(stack, "pty")) as ws:
            await ws.send_json({"type": "connect", "pid": pid})
            assert await next_json(ws) == {"type": "started", "tag": tag, "pid": pid}
            await ws.send_json({"type": "kill"})
            assert await next_control(ws) == {"type": "exit", "exit_code": 137}
            assert await assert_closed(ws) == 1000
        assert pid not in await running_pids(stack)

        async with open_ws(http, path(stack, "pty")) as ws:
            await ws.send_json({"type": "connect", "tag": "pty-nosuchse"})
            error = await next_json(ws)
            assert error == {"type": "error", "data": "PTY session not found", "fatal": True}
            assert await assert_closed(ws) == 1008
        async with open_ws(http, path(stack, "pty")) as ws:
            await ws.send_json({"type": "input", "data": ""})
            error = await next_json(ws)
            assert error["fatal"] is True and "start or connect" in error["data"]


async def test_pty_keepalive_and_first_message_timeout(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "PING_INTERVAL", 0.2)
    monkeypatch.setattr(messages, "FIRST_MESSAGE_TIMEOUT", 0.5)
    async with stack.team_a() as http:
        async with open_ws(http, path(stack, "pty")) as ws:
            await ws.send_json({"type": "start", "cmd": "/bin/sh"})
            assert (await next_json(ws))["type"] == "started"
            for _ in range(2):
                while True:
                    event = await ws.receive(timeout=STEP)
                    if isinstance(event, TextMessage):
                        break
                assert json.loads(event.data) == {"type": "ping"}
                await ws.send_json({"type": "pong"})  # what the SDK answers: no error back
            await ws.send_bytes(b"exit 3\n")
            assert await next_control(ws) == {"type": "exit", "exit_code": 3}
        for endpoint in ("pty", "exec/stream"):
            async with open_ws(http, path(stack, endpoint)) as ws:
                error = await next_json(ws)
                assert error["type"] == "error" and "received in time" in error["data"]
                assert await assert_closed(ws) == 1008


# -- processes/{selector}/stream ---------------------------------------------------------------


async def test_reattach_by_pid_and_tag(stack: Stack) -> None:
    tag = f"job-{secrets.token_hex(4)}"
    r = await exec_via_rest(
        stack, "echo one; sleep 2; echo two >&2; exit 5", background=True, tag=tag
    )
    assert r.status_code == 202, r.text
    pid = r.json()["pid"]
    async with stack.team_a() as http:
        # While it runs: "one" is replayed from the buffer, "two" arrives live.
        async with open_ws(http, path(stack, f"processes/{pid}/stream")) as ws:
            msgs, out, err = await collect(ws)
        assert msgs[0] == {"type": "start", "pid": pid}
        assert (out, err) == ("one\n", "two\n")
        assert msgs[-1] == {"type": "exit", "exit_code": 5}
        # After it exited, by tag: the whole output again, then the exit.
        async with open_ws(http, path(stack, f"processes/{tag}/stream")) as ws:
            msgs, out, err = await collect(ws)
        assert msgs[0] == {"type": "start", "pid": pid}
        assert (out, err, msgs[-1]["exit_code"]) == ("one\n", "two\n", 5)

        async with open_ws(http, path(stack, "processes/no-such-tag/stream")) as ws:
            msgs, _, _ = await collect(ws)
        assert msgs == [{"type": "error", "data": "process not found"}]


async def test_reattach_detach_leaves_process_running(stack: Stack) -> None:
    tag = f"bg-{secrets.token_hex(4)}"
    r = await exec_via_rest(stack, "echo started; sleep 300", background=True, tag=tag)
    pid = r.json()["pid"]
    async with stack.team_a() as http:
        async with open_ws(http, path(stack, f"processes/{tag}/stream")) as ws:
            assert await next_json(ws) == {"type": "start", "pid": pid}
            assert await next_json(ws) == {"type": "stdout", "data": "started\n"}
        await asyncio.sleep(0.5)
        assert pid in await running_pids(stack)
        r = await http.delete(path(stack, f"processes/{pid}"))
        assert r.status_code == 204


# -- streams that cannot start -----------------------------------------------------------------

ENDPOINTS = ["exec/stream", "pty", "processes/1/stream"]


async def _refusal(http: httpx.AsyncClient, url: str) -> tuple[int, str]:
    """The status of a refused upgrade (as the SDK's client sees it) and the error code in its
    body (httpx-ws drops the body, so that comes from a raw handshake)."""
    try:
        async with open_ws(http, url):
            pass
    except httpx_ws.WebSocketUpgradeError as e:
        status = e.response.status_code
    else:
        raise AssertionError(f"{url}: the upgrade was accepted")
    handshake = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(secrets.token_bytes(16)).decode(),
    }
    raw = await http.get(url, headers=handshake)
    assert raw.status_code == status, raw.text
    return status, raw.json()["error"]["code"]


async def _error_frame(http: httpx.AsyncClient, url: str, first: Any = None) -> tuple[Any, int]:
    """What a stream that cannot start says on the accepted socket (after `first`, if given),
    and the socket's close code."""
    async with open_ws(http, url) as ws:
        if first is not None:
            await ws.send_json(first)
        msg = await next_json(ws)
        return msg, await assert_closed(ws)


def _error(endpoint: str, data: str) -> dict[str, Any]:
    """The Go system's error message: a PTY's says it ends the session."""
    return {"type": "error", "data": data} | ({"fatal": True} if endpoint == "pty" else {})


async def test_wrong_credentials_refused(stack: Stack) -> None:
    for headers in ({"X-API-Key": "wrn_" + "0" * 64}, {"Authorization": "Bearer nope"}):
        async with stack.client(**headers) as http:
            for endpoint in ENDPOINTS:
                status, code = await _refusal(http, path(stack, endpoint))
                assert (status, code) == (401, "unauthorized"), (headers, endpoint)


async def test_no_credentials_then_an_auth_message(stack: Stack) -> None:
    async with stack.client() as http:
        # A browser's way: the first message carries the JWT (or an API key).
        async with open_ws(http, path(stack, "exec/stream")) as ws:
            await ws.send_json({"type": "auth", "token": stack.token})
            await ws.send_json({"type": "start", "cmd": "echo $((6 * 7))"})
            _, out, _ = await collect(ws)
        assert out == "42\n"
        async with open_ws(http, path(stack, "pty")) as ws:
            await ws.send_json({"type": "auth", "token": stack.key})
            await ws.send_json({"type": "start", "cmd": "/bin/sh", "cols": 80, "rows": 24})
            started = await next_control(ws)
            assert started["type"] == "started"
            await ws.send_json({"type": "kill"})
            assert (await next_control(ws))["type"] == "exit"
        for endpoint in ENDPOINTS:
            msg, code = await _error_frame(http, path(stack, endpoint), {"type": "auth"})
            assert msg["type"] == "error" and code == 1008, endpoint
            assert msg["data"].startswith("authentication failed"), msg
            msg, code = await _error_frame(
                http, path(stack, endpoint), {"type": "auth", "token": "not-a-token"}
            )
            assert msg["data"].startswith("authentication failed") and code == 1008, msg
        # Nothing sent within the deadline.
        started = time.monotonic()
        msg, code = await _error_frame(http, path(stack, "exec/stream"))
        assert msg["data"].startswith("authentication failed") and code == 1008, msg
        assert 4 <= time.monotonic() - started < 20


async def test_other_team_missing_capsule_and_process(stack: Stack) -> None:
    async with stack.client(**{"X-API-Key": stack.other_key}) as http:
        for endpoint in ENDPOINTS:
            msg, code = await _error_frame(http, path(stack, endpoint))
            assert (msg, code) == (_error(endpoint, "capsule not found"), 1008), endpoint
    async with stack.team_a() as http:
        missing = "sb-00000000-0000-4000-8000-000000000000"
        msg, code = await _error_frame(http, f"/v1/capsules/{missing}/pty")
        assert (msg, code) == (_error("pty", "capsule not found"), 1008)
        msg, code = await _error_frame(http, "/v1/capsules/not-an-id/exec/stream")
        assert msg["type"] == "error" and code == 1008
        # The capsule is there, the process is not.
        msg, code = await _error_frame(http, path(stack, "processes/999999/stream"))
        assert (msg, code) == (_error("exec/stream", "process not found"), 1008)
        msg, code = await _error_frame(http, path(stack, "pty"), {"type": "connect", "tag": "x"})
        assert (msg, code) == (_error("pty", "PTY session not found"), 1008)


# -- users -------------------------------------------------------------------------------------


async def test_commands_run_as_the_default_user_unless_another_is_named(stack: Stack) -> None:
    """The base template's wrenn-user, in its home (a `cd` does not carry over to the next
    command); `user` on REST exec, on the exec stream's and the PTY's start picks another, and
    an unknown one is a clear 400 or error frame."""
    home = "/home/wrenn-user"
    r = await exec_via_rest(stack, "id -un; pwd; cd /tmp; echo $HOME $USER $LANG")
    assert r.status_code == 200, r.text
    assert r.json()["stdout"].split() == ["wrenn-user", home, home, "wrenn-user", "C.UTF-8"]
    assert (await exec_via_rest(stack, "pwd")).json()["stdout"] == f"{home}\n"
    r = await exec_via_rest(stack, "id -un; echo $HOME", user="root")
    assert r.status_code == 200 and r.json()["stdout"].split() == ["root", "/root"], r.text
    r = await exec_via_rest(stack, "true", user="no-such-user")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
    assert "no-such-user" in r.json()["error"]["message"]
    async with stack.team_a() as http:
        async with open_ws(http, path(stack, "exec/stream")) as ws:
            await ws.send_json({"type": "start", "cmd": "id -un", "user": "nobody"})
            _msgs, out, _err = await collect(ws)
        assert out == "nobody\n"
        async with open_ws(http, path(stack, "pty")) as ws:
            await ws.send_json({"type": "start", "cmd": "/bin/sh", "user": "root"})
            assert (await next_json(ws))["type"] == "started"
            await ws.send_bytes(b"echo I am $(id -un) in $(pwd)\n")
            await read_pty_until(ws, b"I am root in /root")
            await ws.send_bytes(b"exit\n")
            assert await next_control(ws) == {"type": "exit", "exit_code": 0}
