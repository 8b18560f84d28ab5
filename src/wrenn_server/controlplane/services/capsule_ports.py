"""A running capsule's listening TCP ports, as its host agent finds them, each with the URL
that reaches it through the port proxy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..agents.rpc import agent_errors
from ..db.session import Database
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
    client = await capsules.running_client(db, hosts, team_id, wire_id)
    capsule_id = ids.SANDBOX.format(ids.SANDBOX.parse(wire_id, not_found=True))
    with agent_errors():
        res = await client.list_ports(pb.SandboxRef(sandbox_id=capsule_id))
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
