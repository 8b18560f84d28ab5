"""The E2B envd protocol's small parts: a stream's pace (keepalives when quiet, the deadline,
the end when the client leaves, the source's error), the Basic auth user, the multipart upload
parser (several files, each streamed, a body cut short refused), and refusals as Connect codes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import grpc
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from wrenn_server.controlplane.api.e2b_multipart import FileParts, boundary_of
from wrenn_server.controlplane.errors import BadRequest, NotFound, Unauthorized
from wrenn_server.controlplane.services.e2b_envd.errors import as_connect
from wrenn_server.controlplane.services.e2b_envd.pacing import (
    KEEPALIVE,
    DeadlinePassed,
    keepalive_interval,
    paced,
)
from wrenn_server.controlplane.services.e2b_envd.target import basic_user


async def _slow(items: list[tuple[float, str]]) -> AsyncIterator[str]:
    for delay, item in items:
        await asyncio.sleep(delay)
        yield item


async def _collect(stream: AsyncIterator[object]) -> list[object]:
    return [item async for item in stream]


async def test_a_quiet_stream_gets_keepalives_and_busy_one_none() -> None:
    got = await _collect(paced(_slow([(0.0, "a"), (0.25, "b")]), 0.1, None))
    assert got[0] == "a" and got[-1] == "b"
    assert 1 <= got.count(KEEPALIVE) <= 3
    busy = await _collect(paced(_slow([(0.0, "a"), (0.0, "b")]), 10, None))
    assert busy == ["a", "b"]


async def test_the_deadline_ends_the_stream() -> None:
    with pytest.raises(DeadlinePassed):
        await _collect(paced(_slow([(5.0, "never")]), 10, 100))


async def test_a_client_leaving_ends_a_quiet_stream_at_once() -> None:
    gone = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, gone.set)
    started = asyncio.get_running_loop().time()
    assert await _collect(paced(_slow([(30.0, "never")]), 60, None, gone)) == []
    assert asyncio.get_running_loop().time() - started < 5


async def test_the_sources_error_is_raised() -> None:
    async def failing() -> AsyncIterator[str]:
        yield "a"
        raise RuntimeError("agent gone")

    with pytest.raises(RuntimeError, match="agent gone"):
        await _collect(paced(failing(), 10, None))


def test_keepalive_interval_is_bounded() -> None:
    assert keepalive_interval({"keepalive-ping-interval": "50"}) == 50
    assert keepalive_interval({"keepalive-ping-interval": "0"}) == 1
    assert keepalive_interval({"keepalive-ping-interval": "1e9"}) == 3600
    assert keepalive_interval({}) == 90


def test_basic_user() -> None:
    def basic(value: str) -> str:
        return "Basic " + base64.b64encode(value.encode()).decode()

    assert basic_user(basic("user:")) == "user"
    assert basic_user(None) == "" and basic_user("Bearer x") == ""
    with pytest.raises(Unauthorized):
        basic_user("Basic !!!")
    with pytest.raises(Unauthorized):
        basic_user(basic("../etc:"))


async def _body(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _multipart(parts: list[tuple[str, str, bytes]], end: bool = True) -> bytes:
    out = b""
    for name, filename, data in parts:
        out += (
            b"--B\r\nContent-Disposition: form-data; "
            + f'name="{name}"; filename="{filename}"'.encode()
            + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
            + data
            + b"\r\n"
        )
    return out + (b"--B--\r\n" if end else b"")


async def test_multipart_files_are_streamed_one_after_another() -> None:
    assert boundary_of("multipart/form-data; boundary=B") == b"B"
    assert boundary_of("application/json") is None
    body = _multipart([("file", "/a", b"first" * 20), ("other", "", b"x"), ("file", "/b", b"2")])
    parts = FileParts(_body(body), b"B")
    got: list[tuple[str, str, bytes]] = []
    async for name, filename in parts.parts():
        got.append((name, filename, b"".join([c async for c in parts.chunks()])))
    assert got == [("file", "/a", b"first" * 20), ("other", "", b"x"), ("file", "/b", b"2")]


async def test_a_multipart_body_cut_short_is_refused() -> None:
    parts = FileParts(_body(_multipart([("file", "/a", b"data")], end=False)), b"B")
    with pytest.raises(BadRequest):
        async for _name, _filename in parts.parts():
            async for _chunk in parts.chunks():
                pass


def _rpc(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (_rpc(grpc.StatusCode.NOT_FOUND, "no such file"), Code.NOT_FOUND, "no such file"),
        (_rpc(grpc.StatusCode.INVALID_ARGUMENT, "bad path"), Code.INVALID_ARGUMENT, "bad path"),
        (_rpc(grpc.StatusCode.PERMISSION_DENIED, "denied"), Code.PERMISSION_DENIED, "denied"),
        (_rpc(grpc.StatusCode.ALREADY_EXISTS, "exists"), Code.ALREADY_EXISTS, "exists"),
        (_rpc(grpc.StatusCode.RESOURCE_EXHAUSTED, "disk full"), Code.RESOURCE_EXHAUSTED, None),
        (_rpc(grpc.StatusCode.FAILED_PRECONDITION, "exited"), Code.FAILED_PRECONDITION, None),
        # The agent's own failure: nothing of it leaks.
        (_rpc(grpc.StatusCode.INTERNAL, "/var/lib/secret"), Code.INTERNAL, "host agent error"),
        (Unauthorized("who?"), Code.UNAUTHENTICATED, "who?"),
        (NotFound("capsule not found"), Code.NOT_FOUND, "capsule not found"),
    ],
)
def test_refusals_become_connect_codes(error: Exception, code: Code, message: str | None) -> None:
    with pytest.raises(ConnectError) as raised, as_connect():
        raise error
    assert raised.value.code == code
    if message is not None:
        assert raised.value.message == message
