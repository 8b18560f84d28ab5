"""One cached host agent client per host, created on first use."""

from __future__ import annotations

import uuid

from ...hostagent.client import AgentClient


class HostClientPool:
    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._clients: dict[uuid.UUID, tuple[str, AgentClient]] = {}

    def client(self, host_id: uuid.UUID, address: str) -> AgentClient:
        cached = self._clients.get(host_id)
        if cached and cached[0] == address:
            return cached[1]
        client = AgentClient(address, self._secret)
        self._clients[host_id] = (address, client)
        return client

    async def evict(self, host_id: uuid.UUID) -> None:
        cached = self._clients.pop(host_id, None)
        if cached:
            await cached[1].close()

    async def close(self) -> None:
        for host_id in list(self._clients):
            await self.evict(host_id)
