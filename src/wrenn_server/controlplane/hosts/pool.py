"""One cached host agent client per host, created on first use."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ...hostagent.client import AgentClient
from ..db.models.hosts import Host


class HostClientPool:
    """`secret_for` gives the secret each host's agent expects: the operator's shared secret for
    the host named in the settings, a per-host derived one for registered hosts."""

    def __init__(self, secret_for: Callable[[uuid.UUID], str]) -> None:
        self._secret_for = secret_for
        self._clients: dict[uuid.UUID, tuple[tuple[str, str | None], AgentClient]] = {}

    def client(self, host: Host) -> AgentClient:
        """The host's client; over TLS, trusting only the certificate pinned for it, when the
        host has one."""
        key = (host.address or "", host.tls_certificate)
        cached = self._clients.get(host.id)
        if cached and cached[0] == key:
            return cached[1]
        certificate = host.tls_certificate.encode() if host.tls_certificate else None
        client = AgentClient(key[0], self._secret_for(host.id), certificate=certificate)
        self._clients[host.id] = (key, client)
        return client

    async def evict(self, host_id: uuid.UUID) -> None:
        cached = self._clients.pop(host_id, None)
        if cached:
            await cached[1].close()

    async def close(self) -> None:
        for host_id in list(self._clients):
            await self.evict(host_id)
