"""How the host agent reads envd's answers (envd_client.py) and what the caller of its RPC then
gets (rpc_guard.status_for): error statuses and bodies, answers that are not what envd sends,
oversized ones, an envd that does not answer. envd is a real HTTP server on 127.0.0.1 here,
answering with canned responses; envd runs in the capsule, where root may be hostile, so every
answer is a potential attack."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.ports import free_port
from tests.unit.hostagent.fake_envd import Answer, FakeEnvd, error_body
from wrenn_server.hostagent import envd_client, errors
from wrenn_server.hostagent.envd_client import MAX_EVENT_LINE, EnvdClient
from wrenn_server.hostagent.rpc_guard import status_for

TOKEN = "t0ken"


@pytest.fixture
async def client(envd: FakeEnvd) -> AsyncIterator[EnvdClient]:
    c = EnvdClient("127.0.0.1", envd.port, TOKEN)
    try:
        yield c
    finally:
        await c.aclose()


# envd's answer -> the agent's error, the gRPC status its caller gets, and the message it sees.
ERRORS = [
    (400, error_body("invalid_argument", "path must be absolute"),
     errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, "path must be absolute"),
    (404, error_body("not_found", "no such file: /x"),
     errors.NotFound, grpc.StatusCode.NOT_FOUND, "no such file: /x"),
    (409, error_body("already_exists", "/x exists"),
     errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, "/x exists"),
    (403, error_body("permission_denied", "as user: /root"),
     errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "as user: /root"),
    (507, error_body("resource_exhausted", "no space left"),
     errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, "no space left"),
    # A conflict other than an existing file: the capsule is not in a state for it.
    (409, error_body("not_a_directory", "/x is a file"),
     errors.InvalidState, grpc.StatusCode.FAILED_PRECONDITION, "/x is a file"),
    (409, b"<html>conflict</html>",
     errors.InvalidState, grpc.StatusCode.FAILED_PRECONDITION, "conflict"),
    # Anything envd does not document says nothing of what it carries.
    (500, error_body("internal", "Traceback: /opt/wrenn/envd/secret.py"),
     errors.Internal, grpc.StatusCode.INTERNAL, "internal error"),
    (418, error_body("teapot", "host paths here"),
     errors.Internal, grpc.StatusCode.INTERNAL, "internal error"),
    (400, b"not json at all",
     errors.Internal, grpc.StatusCode.INTERNAL, "internal error"),
    (400, b'{"error": "flat string"}',
     errors.Internal, grpc.StatusCode.INTERNAL, "internal error"),
    (404, b'{"error": {"code": "not_found"}}',
     errors.Internal, grpc.StatusCode.INTERNAL, "internal error"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "error", "code", "message"),
    ERRORS,
    ids=[f"{e[0]}-{e[2].__name__}" for e in ERRORS],
)
async def test_error_answers(
    envd: FakeEnvd,
    client: EnvdClient,
    status: int,
    body: bytes,
    error: type[errors.AgentError],
    code: grpc.StatusCode,
    message: str,
) -> None:
    envd.answers["/fs/stat"] = Answer(status, body)
    with pytest.raises(errors.AgentError) as exc:
        await client.stat("/x")
    assert type(exc.value) is error
    assert status_for(exc.value) == (code, message)


async def test_error_answers_end_a_stream_before_it_starts(
    envd: FakeEnvd, client: EnvdClient
) -> None:
    envd.answers["/processes"] = Answer(404, error_body("not_found", "no such user: bob"))
    with pytest.raises(errors.NotFound, match="no such user: bob"):
        async for _ev in client.start_process({"cmd": "true", "user": "bob"}):
            pass
    envd.answers["/files"] = Answer(403, error_body("permission_denied", "denied"))
    with pytest.raises(errors.PermissionDenied, match="denied"):
        async for _chunk in client.read_file("/root/x"):
            pass


async def test_events_are_decoded_and_the_token_is_sent(envd: FakeEnvd, client: EnvdClient) -> None:
    events = [
        b'{"type": "start", "pid": 7}\n',
        b'{"type": "stdout", "data": "aGVs',  # a line split across writes
        b'bG8K"}\n\n{"type": "exit", "exit_code": 0}',  # empty lines skipped, none at the end
    ]
    envd.answers["/processes"] = Answer(200, events, "application/x-ndjson")
    got = [ev async for ev in client.start_process({"cmd": "echo"})]
    assert got == [
        {"type": "start", "pid": 7},
        {"type": "stdout", "data": b"hello\n"},
        {"type": "exit", "exit_code": 0},
    ]
    assert envd.seen == [("POST", "/processes", f"Bearer {TOKEN}")]
    client.set_token("new")
    envd.answers["/health"] = Answer(200, b'{"ok": true}')
    assert await client.health() == {"ok": True}
    assert envd.seen[-1] == ("GET", "/health", "Bearer new")


async def test_an_oversized_event_line_is_refused(envd: FakeEnvd, client: EnvdClient) -> None:
    endless = [b'{"type": "stdout", "data": "'] + [b"A" * 65536] * (MAX_EVENT_LINE // 65536 + 2)
    envd.answers["/processes"] = Answer(200, endless, "application/x-ndjson")
    with pytest.raises(errors.Internal) as exc:
        async for _ev in client.start_process({"cmd": "yes"}):
            pass
    assert str(exc.value) == "capsule agent sent an oversized event"
    # The caller learns nothing of what the capsule sent.
    assert status_for(exc.value) == (grpc.StatusCode.INTERNAL, "internal error")


async def test_an_oversized_answer_is_refused(
    envd: FakeEnvd, client: EnvdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real bound is 64 MiB; a smaller one keeps the test fast and checks the same code.
    monkeypatch.setattr(envd_client, "MAX_JSON", 100_000)
    entry = {"name": "x", "path": "/x", "padding": ""}
    fits = json.dumps({**entry, "padding": "p" * 90_000}).encode()
    envd.answers["/fs/stat"] = Answer(200, [fits[:50_000], fits[50_000:]])
    assert (await client.stat("/x"))["name"] == "x"
    too_big = json.dumps({**entry, "padding": "p" * 100_001}).encode()
    envd.answers["/fs/stat"] = Answer(200, [too_big[:60_000], too_big[60_000:]])
    with pytest.raises(errors.Internal, match="oversized answer"):
        await client.stat("/x")
    # Error bodies are bounded the same way.
    envd.answers["/fs/stat"] = Answer(400, b"x" * 100_001)
    with pytest.raises(errors.Internal, match="oversized answer"):
        await client.stat("/x")


async def test_an_answer_that_is_not_json_is_refused(envd: FakeEnvd, client: EnvdClient) -> None:
    envd.answers["/fs/stat"] = Answer(200, b"<html>hi</html>", "text/html")
    with pytest.raises(errors.Internal) as exc:
        await client.stat("/x")
    assert str(exc.value) == "capsule agent sent an invalid answer"
    assert status_for(exc.value) == (grpc.StatusCode.INTERNAL, "internal error")


async def test_an_envd_that_is_not_there_is_unavailable() -> None:
    client = EnvdClient("127.0.0.1", free_port(), TOKEN)
    try:
        with pytest.raises(errors.Unavailable) as exc:
            await client.stat("/x")
        assert status_for(exc.value) == (
            grpc.StatusCode.UNAVAILABLE,
            "capsule agent is not reachable",
        )
        with pytest.raises(errors.Unavailable):
            async for _ev in client.start_process({"cmd": "true"}):
                pass
    finally:
        await client.aclose()


async def test_waiting_for_an_envd_that_never_gets_ready_times_out(
    envd: FakeEnvd, client: EnvdClient
) -> None:
    envd.answers["/health"] = Answer(503, b"")
    with pytest.raises(errors.Timeout) as exc:
        await client.wait_ready(0.3)
    assert status_for(exc.value)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(envd.seen) > 1  # it asked again until the deadline
    envd.answers["/health"] = Answer(200, b"{}")
    await client.wait_ready(5)


async def test_waiting_stops_when_the_sandbox_is_gone(envd: FakeEnvd, client: EnvdClient) -> None:
    """A sandbox that died while envd started (killed, out of memory) fails the wait at once,
    not after the whole timeout; one that runs on keeps it waiting."""
    envd.answers["/health"] = Answer(503, b"")
    polls = 0

    def alive() -> bool:
        nonlocal polls
        polls += 1
        return polls < 3

    started = time.monotonic()
    with pytest.raises(errors.Internal) as exc:
        await client.wait_ready(60, alive)
    assert time.monotonic() - started < 5
    assert polls == 3
    assert status_for(exc.value)[0] == grpc.StatusCode.INTERNAL
    envd.answers["/health"] = Answer(200, b"{}")
    await client.wait_ready(5, lambda: False)  # envd answers: the sandbox runs


async def test_an_envd_that_hangs_is_cut_off(envd: FakeEnvd, client: EnvdClient) -> None:
    """health() has its own 5 s bound; the caller then sees the capsule agent as unreachable."""
    envd.answers["/health"] = Answer(hang=True)
    with pytest.raises(errors.Unavailable):
        await client.health()


async def test_event_lines_of_no_known_type_are_skipped(envd: FakeEnvd, client: EnvdClient) -> None:
    events = [
        b'{"type": "start", "pid": 7}\n',
        b'{"type": "progress", "data": "x"}\n{"pid": 8}\n',  # not events of this protocol
        b'{"type": "exit", "exit_code": 3, "signal": null}\n',
    ]
    envd.answers["/processes"] = Answer(200, events, "application/x-ndjson")
    got = [ev async for ev in client.start_process({"cmd": "true"})]
    assert got == [
        {"type": "start", "pid": 7},
        {"type": "exit", "exit_code": 3, "signal": None},
    ]


async def test_listening_ports_keep_only_what_envd_would_send(
    envd: FakeEnvd, client: EnvdClient
) -> None:
    good = {"port": 8000, "address": "0.0.0.0", "pid": 42, "command": "python3 -m http.server"}
    ports = [
        good,
        {"port": 8000, "address": "::", "pid": 43, "command": "a duplicate port"},
        {"port": 3000, "address": "::1", "pid": None, "command": "a command without a pid"},
        {"port": 5000, "address": "127.0.0.1", "pid": True, "command": "x" * 10_000},
        {"port": 6000, "address": "127.0.0.1", "pid": 7, "command": "bad \ud800 utf-8 \x00"},
        {"port": 0, "address": "0.0.0.0", "pid": 1, "command": "port zero"},
        {"port": 70000, "address": "0.0.0.0", "pid": 1, "command": "port too big"},
        {"port": "80", "address": "0.0.0.0", "pid": 1, "command": "port as text"},
        {"port": 81, "address": "not an address", "pid": 1, "command": "x"},
        {"port": 82, "address": "0.0.0.0", "pid": -5, "command": "negative pid"},
        "not an object",
    ]
    envd.answers["/ports"] = Answer(200, json.dumps({"ports": ports}).encode())
    assert await client.list_ports() == [
        {"port": 82, "address": "0.0.0.0", "pid": None, "command": None},
        {"port": 3000, "address": "::1", "pid": None, "command": None},
        {"port": 5000, "address": "127.0.0.1", "pid": None, "command": None},
        {"port": 6000, "address": "127.0.0.1", "pid": 7, "command": "bad ? utf-8  "},
        good,
    ]
    envd.answers["/ports"] = Answer(200, json.dumps({"ports": [good] * 5000}).encode())
    assert len(await client.list_ports()) == 1
    envd.answers["/ports"] = Answer(200, b'{"ports": {"8000": 1}}')
    with pytest.raises(errors.Internal, match="invalid answer"):
        await client.list_ports()
