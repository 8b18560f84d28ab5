"""The fake agent served: a real `grpc.aio` server on a free loopback port, with the agent's
channel options, and its TTL reaper running."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import grpc

from wrenn_server.agentproto.channel import GRPC_OPTIONS
from wrenn_server.proto.hostagent.v1 import hostagent_pb2_grpc as pb_grpc

from .servicer import FakeHostAgent

REAPER_INTERVAL = 0.05


class FakeAgentServer:
    """`async with FakeAgentServer() as server:` serves `server.agent` at `server.target`.
    `stop()` and `start()` take the agent off the network and back (same port, same state)."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret or secrets.token_urlsafe(24)
        self.agent = FakeHostAgent(self.secret)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_HostAgentServicer_to_server(self.agent, server)
        port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        if port == 0:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port}")
        self.port = port
        await server.start()
        self._server = server
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="fake-agent-reaper")

    async def stop(self) -> None:
        """Off the network: calls in flight are cancelled, new ones cannot connect."""
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    async def close(self) -> None:
        await self.stop()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for sandbox in self.agent.sandboxes.values():
            sandbox.discard()

    async def __aenter__(self) -> FakeAgentServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAPER_INTERVAL)
            self.agent.reap_idle()
