"""The host client pool closes what it no longer uses: a client replaced because its host's
address or certificate changed has its channel closed (after a grace for calls in flight), and
closing the pool closes every channel, the ones still in their grace too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane.agents.pool import HostClientPool
from wrenn_server.controlplane.db.models.hosts import Host

SHUTDOWN = grpc.ChannelConnectivity.SHUTDOWN


def _host(address: str) -> Host:
    return Host(id=uuid.uuid4(), type="regular", address=address, status="online")


@pytest.fixture
async def hanging_agent() -> AsyncIterator[str]:
    """A local gRPC server whose one method never answers: a call kept in flight."""

    async def hang(_request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(hang)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("t.T", {"Hang": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def _hang(client: AgentClient) -> asyncio.Task[bytes]:
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = client.channel.unary_unary("/t.T/Hang")

    async def call() -> bytes:
        answer: bytes = await method(b"", timeout=3600)
        return answer

    return asyncio.create_task(call())


async def _ended_within(call: asyncio.Task[bytes], seconds: float) -> bool:
    """The call ended within `seconds`, cancelled by its channel's close (the server never
    answers: nothing else ends it)."""
    done, _ = await asyncio.wait([call], timeout=seconds)
    if not done:
        return False
    if call.cancelled():  # grpc raises CancelledError for a call its channel cancelled
        return True
    error = call.exception()
    assert isinstance(error, grpc.aio.AioRpcError), error
    return error.code() == grpc.StatusCode.CANCELLED


async def _closed_within(client: AgentClient, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while client.channel.get_state() != SHUTDOWN:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_a_replaced_client_is_closed_after_its_grace() -> None:
    pool = HostClientPool(lambda _host_id: "agent-secret", retire_grace=0.1)
    try:
        host = _host("127.0.0.1:1")
        first = await pool.client(host)
        assert await pool.client(host) is first  # unchanged: the same client
        assert first.channel.get_state() != SHUTDOWN
        host.address = "127.0.0.1:2"
        second = await pool.client(host)
        assert second is not first
        assert await _closed_within(first, 5)
        assert second.channel.get_state() != SHUTDOWN
        host.tls_certificate = "-----BEGIN CERTIFICATE-----\n"  # a new pinned certificate
        third = await pool.client(host)
        assert third is not second
        assert await _closed_within(second, 5)
    finally:
        await pool.close()
    assert third.channel.get_state() == SHUTDOWN


async def test_a_call_in_flight_gets_the_grace_then_is_ended(hanging_agent: str) -> None:
    pool = HostClientPool(lambda _host_id: "agent-secret", retire_grace=1.0)
    try:
        host = _host(hanging_agent)
        first = await pool.client(host)
        call = _hang(first)
        await _until_connected(first)
        host.address = "127.0.0.1:2"
        await pool.client(host)
        assert not call.done()  # not cut off at once
        assert await _ended_within(call, 10)
    finally:
        await pool.close()


async def test_closing_the_pool_ends_clients_still_in_their_grace(hanging_agent: str) -> None:
    pool = HostClientPool(lambda _host_id: "agent-secret", retire_grace=3600)
    host = _host(hanging_agent)
    first = await pool.client(host)
    call = _hang(first)
    await _until_connected(first)
    host.address = "127.0.0.1:2"
    second = await pool.client(host)
    other = await pool.client(_host("127.0.0.1:3"))
    await asyncio.wait_for(pool.close(), 5)
    assert await _ended_within(call, 5)
    assert [c.channel.get_state() for c in (first, second, other)] == [SHUTDOWN] * 3


async def _until_connected(client: AgentClient) -> None:
    await asyncio.wait_for(client.channel.channel_ready(), 10)
