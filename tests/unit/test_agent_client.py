"""The agent client's typed methods, over a real gRPC channel to a server that records which RPC
each one reaches: one method per RPC of the service, each calling its own RPC with the caller's
credentials and its default timeout, and answering with that RPC's message type."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.fakeagent.server import FakeAgentServer
from wrenn_server.agentproto.client import DEFAULT_TIMEOUT, AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["HostAgent"]
SECRET = "s3cret"


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Recorder:
    """Answers every RPC with an empty message of its response type, noting what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, dict[str, str], float | None]] = []

    def note(self, name: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.seen.append((name, request, metadata, context.time_remaining()))

    def handler(self) -> grpc.GenericRpcHandler:
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in SERVICE.methods:
            handlers[method.name] = self._method_handler(method)
        return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)

    def _method_handler(self, method: Any) -> grpc.RpcMethodHandler:
        name = method.name
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        wire = {
            "request_deserializer": request_type.FromString,
            "response_serializer": response_type.SerializeToString,
        }
        if method.client_streaming and method.server_streaming:

            async def both_ways(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
                self.note(name, [r async for r in requests], context)
                yield response_type()

            return grpc.stream_stream_rpc_method_handler(both_ways, **wire)
        if method.client_streaming:

            async def take_stream(requests: AsyncIterator[Any], context: Any) -> Any:
                self.note(name, [r async for r in requests], context)
                return response_type()

            return grpc.stream_unary_rpc_method_handler(take_stream, **wire)
        if method.server_streaming:

            async def give_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                self.note(name, request, context)
                yield response_type()

            return grpc.unary_stream_rpc_method_handler(give_stream, **wire)

        async def unary(request: Any, context: Any) -> Any:
            self.note(name, request, context)
            return response_type()

        return grpc.unary_unary_rpc_method_handler(unary, **wire)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Recorder, AgentClient]]:
    recorder = Recorder()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((recorder.handler(),))
    target = f"unix:{tmp_path / 'agent.sock'}"
    server.add_insecure_port(target)
    await server.start()
    try:
        async with AgentClient(target, SECRET) as client:
            yield recorder, client
    finally:
        await server.stop(None)


def test_every_rpc_has_its_method() -> None:
    for method in SERVICE.methods:
        assert callable(getattr(AgentClient, snake(method.name), None)), method.name


async def test_each_method_calls_its_own_rpc(served: tuple[Recorder, AgentClient]) -> None:
    recorder, client = served
    for method in SERVICE.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        call: Callable[..., Any] = getattr(client, snake(method.name))
        if method.client_streaming and method.server_streaming:
            stream = call()
            await stream.write(request_type())
            await stream.done_writing()
            answers = [msg async for msg in stream]
            assert len(answers) == 1
            answer = answers[0]
        elif method.client_streaming:

            async def chunks() -> AsyncIterator[bytes]:
                yield b"one"
                yield b"two"

            header = pb.WriteFileStreamRequest.Header(sandbox_id="sb-1", path="/f")
            answer = await call(header, chunks())
        elif method.server_streaming:
            answers = [msg async for msg in call(request_type())]
            assert len(answers) == 1
            answer = answers[0]
        else:
            pending: Awaitable[Any] = call(request_type())
            answer = await pending
        assert type(answer) is response_type, method.name
        name, _request, metadata, remaining = recorder.seen[-1]
        assert name == method.name
        assert metadata["authorization"] == f"Bearer {SECRET}"
        if method.client_streaming or method.server_streaming:
            assert remaining is None, method.name  # streams run until they end
        else:
            # The deadline goes over the wire rounded up to a second at most.
            assert remaining is not None and DEFAULT_TIMEOUT - 30 < remaining <= DEFAULT_TIMEOUT + 1
    assert [seen[0] for seen in recorder.seen] == [m.name for m in SERVICE.methods]


async def test_a_streamed_write_is_framed(served: tuple[Recorder, AgentClient]) -> None:
    recorder, client = served

    async def chunks() -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"

    header = pb.WriteFileStreamRequest.Header(sandbox_id="sb-1", path="/f", user="root", mode=0o600)
    await client.write_file_stream(header, chunks())
    _name, requests, _metadata, _remaining = recorder.seen[-1]
    assert [r.WhichOneof("part") for r in requests] == ["header", "chunk", "chunk", "end"]
    assert requests[0].header == header
    assert [r.chunk for r in requests[1:3]] == [b"one", b"two"]


async def test_timeouts_are_the_callers(served: tuple[Recorder, AgentClient]) -> None:
    recorder, client = served
    await client.list_sandboxes(pb.ListSandboxesRequest(), timeout=5)
    remaining = recorder.seen[-1][3]
    assert remaining is not None and 0 < remaining <= 6
    await client.ping_sandbox(pb.SandboxRef(sandbox_id="sb-1"), timeout=None)
    assert recorder.seen[-1][3] is None
    assert recorder.seen[-1][1] == pb.SandboxRef(sandbox_id="sb-1")


async def test_a_channel_retries_a_lost_agent_at_most_a_second_apart() -> None:
    """gRPC's default wait between connection attempts grows to two minutes, failing every call
    at once meanwhile: an agent restarted after a few failed calls would look down long after it
    is back. The client's channel tries again at most about a second apart, however long the
    agent was away, and reaches it once it is back."""
    attempts: list[float] = []

    def refuse(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())  # something listens, and hangs up at once
        writer.close()

    dead = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = dead.sockets[0].getsockname()[1]
    agent = FakeAgentServer()
    async with AgentClient(f"127.0.0.1:{port}", agent.secret) as client:
        # Away 5 s: by default the third wait alone is 2-3 s.
        away = time.monotonic() + 5
        while time.monotonic() < away:
            with pytest.raises(grpc.aio.AioRpcError):
                await client.list_sandboxes(pb.ListSandboxesRequest(), timeout=0.5)
            await asyncio.sleep(0.05)
        dead.close()
        await dead.wait_closed()
        gaps = [b - a for a, b in itertools.pairwise([*attempts, time.monotonic()])]
        assert len(attempts) >= 4 and max(gaps) < 1.5, gaps

        agent.port = port
        await agent.start()
        try:
            back = time.monotonic()
            while True:
                try:
                    await client.list_sandboxes(pb.ListSandboxesRequest(), timeout=0.5)
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() - back < 1.5, "the agent is back but not reached"
                    await asyncio.sleep(0.05)
        finally:
            await agent.close()
