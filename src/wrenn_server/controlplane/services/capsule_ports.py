"""A running capsule's listening TCP ports, as its host agent finds them, each with the URL
that reaches it through the port proxy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc

from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..agents.rpc import translate
from ..db.session import Database
from ..errors import HostAgentError
from . import capsules
from .capsules import Hosts


@dataclass(frozen=True, slots=True)
class ListeningPort:
    port: int
    address: str
    pid: int | None
    command: str | None
    url: str


def port_url(scheme: str, proxy_domain: str, port: int, capsule_id: str) -> str:
    """`{scheme}://{port}-{capsule_id}.{proxy_domain}`, as the SDK's `get_url(port)` builds it."""
    return f"{scheme}://{port}-{capsule_id}.{proxy_domain.strip('.')}"


async def list_listening(
    db: Database,
    hosts: Hosts,
    team_id: uuid.UUID,
    wire_id: str,
    *,
    scheme: str,
    proxy_domain: str,
) -> list[ListeningPort]:
    """The ports of a running capsule of the team (404 another team's, 409 not running), by
    port; `scheme` and `proxy_domain` make their URLs."""
    # Looking is not a request into the capsule: a paused one stays paused (409).
    client = await capsules.running_client(db, hosts, team_id, wire_id, wake=False)
    capsule_id = ids.SANDBOX.format(ids.SANDBOX.parse(wire_id, not_found=True))
    try:
        res = await client.list_ports(pb.SandboxRef(sandbox_id=capsule_id))
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            # A host (a team's own, say) still running an agent from before ListPorts.
            raise HostAgentError(
                "the capsule's host runs an older agent that cannot list ports; update it"
            ) from None
        raise translate(e) from None
    return [
        ListeningPort(
            port=p.port,
            address=p.address,
            pid=p.pid if p.HasField("pid") else None,
            command=p.command if p.HasField("command") else None,
            url=port_url(scheme, proxy_domain, p.port, capsule_id),
        )
        for p in sorted(res.ports, key=lambda p: p.port)
        if 1 <= p.port <= 65535
    ]
