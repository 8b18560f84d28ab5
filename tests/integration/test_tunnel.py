"""Tunnels into real capsules: a TCP connection from the agent's caller to a port inside the
capsule, through envd, reaching services on every address and on loopback only; a port nobody
listens on fails at once with a clear error; a paused capsule is refused."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import CapsuleFactory, run

pytestmark = pytest.mark.integration


async def exchange(agent: AgentClient, sandbox_id: str, port: int, payload: bytes) -> bytes:
    """Open a tunnel, send `payload`, half-close, and read everything until the agent's close."""
    call = agent.tunnel(timeout=30)
    await call.write(pb.TunnelFrame(open=pb.TunnelOpen(sandbox_id=sandbox_id, port=port)))
    first = await call.read()
    assert isinstance(first, pb.TunnelFrame) and first.opened
    await call.write(pb.TunnelFrame(data=payload))
    await call.write(pb.TunnelFrame(close=True))
    await call.done_writing()
    received = b""
    while True:
        frame = await call.read()
        assert isinstance(frame, pb.TunnelFrame), "the stream ended without close"
        if frame.WhichOneof("frame") == "close":
            break
        received += frame.data
    return received


async def serve(agent: AgentClient, sandbox_id: str, port: int, bind: str) -> None:
    """python3's http.server in the capsule, once it answers through a tunnel."""
    await run(
        agent,
        sandbox_id,
        f"mkdir -p /tmp/{port} && cd /tmp/{port} && echo hello-{port} > index.txt && "
        f"nohup python3 -m http.server {port} --bind {bind} >/dev/null 2>&1 &",
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            await exchange(agent, sandbox_id, port, b"")
            return
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e.details()
            assert time.monotonic() < deadline, f"nothing listened on {port}"
            await asyncio.sleep(0.1)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: capsule\r\nConnection: close\r\n\r\n".encode()


async def test_services_on_every_address_and_on_loopback_only(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sid = (await new_capsule()).sandbox_id
    await serve(agent, sid, 8000, "0.0.0.0")
    await serve(agent, sid, 8001, "127.0.0.1")
    for port in (8000, 8001):
        answer = await exchange(agent, sid, port, get("/index.txt"))
        assert answer.startswith(b"HTTP/1.0 200"), answer[:200]
        assert answer.endswith(f"hello-{port}\n".encode())


async def test_a_large_answer_streams_through(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sid = (await new_capsule()).sandbox_id
    await run(agent, sid, "mkdir -p /tmp/8000 && head -c 20000000 /dev/urandom > /tmp/8000/big.bin")
    await serve(agent, sid, 8000, "127.0.0.1")
    answer = await exchange(agent, sid, 8000, get("/big.bin"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Length: 20000000" in head
    assert len(body) == 20_000_000


async def test_a_closed_port_fails_fast_and_clearly(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sid = (await new_capsule()).sandbox_id
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await exchange(agent, sid, 8999, b"")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "nothing is listening on port 8999 in the capsule"
    assert time.monotonic() - started < 10
    # envd's own port is not reachable through a tunnel.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await exchange(agent, sid, 49983, b"")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_paused_capsule_is_refused(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    sid = (await new_capsule()).sandbox_id
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=sid))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await exchange(agent, sid, 8000, b"")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
