"""One cached host agent client per host, created on first use."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ...hostagent.client import AgentClient


class HostClientPool:
    """`secret_for` gives the secret each host's agent expects: the operator's shared secret for
    the host named in the settings, a per-host derived one for registered hosts."""

    def __init__(self, secret_for: Callable[[uuid.UUID], str]) -> None:
        self._secret_for = secret_for
        self._clients: dict[uuid.UUID, tuple[str, AgentClient]] = {}

    def client(self, host_id: uuid.UUID, address: str) -> AgentClient:
        cached = self._clients.get(host_id)
        if cached and cached[0] == address:
            return cached[1]
        client = AgentClient(address, self._secret_for(host_id))
        self._clients[host_id] = (address, client)
        return client

    async def evict(self, host_id: uuid.UUID) -> None:
        cached = self._clients.pop(host_id, None)
        if cached:
            await cached[1].close()

    async def close(self) -> None:
        for host_id in list(self._clients):
            await self.evict(host_id)
