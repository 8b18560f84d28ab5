"""One cached host agent client per host, created on first use.

A client dials the address its host registered, parsed (`addresses.parse`), never the raw
string. A BYOC host's address was chosen by its team: it is resolved and checked against the
tenant rule again before the control plane dials (at most `recheck_after` seconds apart, so a
name that later resolves elsewhere - DNS rebinding - is caught), and the client is pinned to the
address that passed. A refused address looks to callers like an unreachable host."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import grpc

from ...addresses import (
    AddressError,
    TenantAddressPolicy,
    check_tenant_address,
    ip_target,
    parse,
)
from ...agentproto.client import AgentClient
from ..db.models.hosts import Host

log = logging.getLogger(__name__)

# How long a replaced client's calls may still finish (a host whose address or certificate
# changed) before its channel is closed.
RETIRE_GRACE = 30.0


def unreachable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details
    )


class HostClientPool:
    """`secret_for` gives the secret each host's agent expects: the operator's shared secret for
    the host named in the settings, a per-host derived one for registered hosts."""

    def __init__(
        self,
        secret_for: Callable[[uuid.UUID], str],
        *,
        tenant_policy: TenantAddressPolicy | None = None,
        recheck_after: float = 30.0,
        retire_grace: float = RETIRE_GRACE,
    ) -> None:
        self._secret_for = secret_for
        self.retire_grace = retire_grace
        self.tenant_policy = tenant_policy or TenantAddressPolicy()
        self.recheck_after = recheck_after
        self._clients: dict[uuid.UUID, tuple[tuple[str, str | None], AgentClient]] = {}
        # BYOC hosts: (registered address, checked target, when checked).
        self._checked: dict[uuid.UUID, tuple[str, str, float]] = {}
        # Replaced clients whose channels are closing (their calls get `retire_grace` seconds).
        self._retiring: dict[asyncio.Task[None], AgentClient] = {}

    async def client(self, host: Host) -> AgentClient:
        """The host's client; over TLS, trusting only the certificate pinned for it, when the
        host has one. Raises an UNAVAILABLE AioRpcError for an address it may not dial."""
        key = (await self._target(host), host.tls_certificate)
        cached = self._clients.get(host.id)
        if cached and cached[0] == key:
            return cached[1]
        if cached:
            self._retire(cached[1])
        certificate = host.tls_certificate.encode() if host.tls_certificate else None
        client = AgentClient(key[0], self._secret_for(host.id), certificate=certificate)
        self._clients[host.id] = (key, client)
        return client

    async def _target(self, host: Host) -> str:
        address = host.address or ""
        if host.type != "byoc":
            try:
                return parse(address).target
            except AddressError as e:
                raise unreachable(f"host address {address!r} is invalid: {e}") from None
        checked = self._checked.get(host.id)
        now = time.monotonic()
        if checked and checked[0] == address and now - checked[2] < self.recheck_after:
            return checked[1]
        try:
            parsed, ips = await check_tenant_address(address, self.tenant_policy)
        except AddressError as e:
            self._checked.pop(host.id, None)
            log.warning("not dialling BYOC host %s at %r: %s", host.id, address, e)
            raise unreachable(f"host address refused: {e}") from None
        target = ip_target(ips[0], parsed.port)
        self._checked[host.id] = (address, target, now)
        return target

    def _retire(self, client: AgentClient) -> None:
        task = asyncio.ensure_future(self._close_after_grace(client))
        self._retiring[task] = client
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def _close_after_grace(self, client: AgentClient) -> None:
        # Not `channel.close(grace)`: a close already waiting out its grace cannot be hurried
        # (a second close is a no-op), and the pool's own close must end every call at once.
        try:
            await asyncio.sleep(self.retire_grace)
        finally:
            await client.close()  # calls still running are cancelled

    async def evict(self, host_id: uuid.UUID) -> None:
        self._checked.pop(host_id, None)
        cached = self._clients.pop(host_id, None)
        if cached:
            await cached[1].close()

    async def close(self) -> None:
        """Every channel closed, the replaced ones still in their grace too (their calls are
        cancelled: the process is stopping)."""
        for host_id in list(self._clients):
            await self.evict(host_id)
        for task in list(self._retiring):
            task.cancel()  # its grace ends now: the channel is closed on the way out
            await asyncio.gather(task, return_exceptions=True)
