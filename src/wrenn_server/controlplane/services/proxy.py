"""The port proxy: `{port}-{capsule_id}.<proxy domain>` names a port of a capsule; a byte tunnel
to it through the host agent holding the capsule (the control plane never dials a capsule
itself). Who may reach it is decided in `proxy_access.py`; a paused capsule with `auto_resume`
is resumed by `proxy_resume.py`."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import grpc

from ...agentproto.client import AgentClient, TunnelCall
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..agents.rpc import translate
from ..db.session import Database, transaction
from ..errors import HostAgentError, InvalidState, PortUnreachable
from . import capsule_routes, capsules
from .proxy_access import Access
from .proxy_pool import TunnelPool
from .proxy_resume import resumed

# Larger writes go to the agent in pieces of this size (gRPC messages stay small).
FRAME = 256 * 1024
_LABEL = re.compile(r"^([0-9]{1,5})-(" + re.escape(ids.SANDBOX.prefix) + r"[0-9a-fA-F-]{36})$")


@dataclass(frozen=True, slots=True)
class Target:
    port: int
    capsule_id: str


@dataclass(frozen=True, slots=True)
class Key:
    """A tunnel's place in the pool: its port, and the capsule's host and start time (a pause
    and resume change it, so a tunnel opened before is never used after)."""

    target: Target
    generation: tuple[object, object]


def parse_host(host: str, proxy_domain: str | None) -> Target | None:
    """The capsule port a Host header names, or None (not a proxy host). Without a configured
    domain the first label alone decides, whatever follows it. A domain with a port
    (`localhost:8080`) must match the Host's exactly; one without matches whatever port the
    client wrote (`:443` behind a TLS terminator)."""
    host = host.strip().lower()
    label, dot, rest = host.partition(".")
    if not dot or not rest:
        return None
    if proxy_domain is not None and not _same_domain(rest, proxy_domain):
        return None
    match = _LABEL.match(label)
    if match is None:
        return None
    port = int(match.group(1))
    if not 1 <= port <= 65535:
        return None
    return Target(port=port, capsule_id=match.group(2))


def _same_domain(rest: str, proxy_domain: str) -> bool:
    """`rest` (the Host after the first label, lowercase) names the proxy domain."""
    domain = proxy_domain.strip().lower().replace(".:", ":").rstrip(".")
    rest = rest.replace(".:", ":").rstrip(".")  # a fully qualified name's trailing dot
    if rest == domain:
        return True
    name, colon, port = rest.rpartition(":")
    return ":" not in domain and bool(colon) and port.isdigit() and name == domain


class Tunnel:
    """A byte stream to a capsule's port: `send`, `send_eof` (half-close), `recv` (b"" at the
    end), `close`."""

    def __init__(self, call: TunnelCall, port: int, key: Key | None = None) -> None:
        self._call = call
        self._port = port
        self._eof_sent = False
        # Where the pool files it once an exchange on it ended cleanly (None: never kept).
        self.key = key
        self.reused = False  # taken from the pool
        self.received = 0  # bytes received since it was opened or taken
        self._ahead: asyncio.Task[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    async def send(self, data: bytes) -> None:
        try:
            for start in range(0, len(data), FRAME):
                await self._call.write(pb.TunnelFrame(data=data[start : start + FRAME]))
        except grpc.aio.AioRpcError as e:
            raise _error(e, self._port) from None
        except asyncio.InvalidStateError:  # the stream already ended: the service closed
            raise PortUnreachable(f"the connection to port {self._port} was closed") from None

    async def send_eof(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            await self._call.write(pb.TunnelFrame(close=True))
            await self._call.done_writing()

    async def recv(self) -> bytes:
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            data = await ahead
        else:
            data = await self._read()
        self.received += len(data)
        return data

    def read_ahead(self) -> asyncio.Task[bytes]:
        """A read started now (the pool's watch over an idle tunnel); the next `recv` returns
        its result."""
        self.received = 0
        self._ahead = asyncio.create_task(self._read())
        return self._ahead

    async def _read(self) -> bytes:
        try:
            frame = await self._call.read()
        except grpc.aio.AioRpcError as e:
            raise _error(e, self._port) from None
        if not isinstance(frame, pb.TunnelFrame) or frame.WhichOneof("frame") != "data":
            return b""
        return bytes(frame.data)

    def close(self) -> None:
        self._call.cancel()


async def open_tunnel(
    db: Database,
    hosts: capsules.Hosts,
    access: Access,
    target: Target,
    pool: TunnelPool[Tunnel] | None = None,
) -> Tunnel:
    """A tunnel to the port of a running capsule of the team: another team's capsule is not
    found (404), a paused one is resumed first if it was made with `auto_resume` and a conflict
    (409) otherwise, a port nobody listens on is a 502. With a `pool`, a live kept tunnel to
    the port is taken if there is one (see proxy_pool.py), and a new one may be kept."""
    client, generation = await running_agent(db, hosts, access, target.capsule_id)
    key = Key(target, generation)
    if pool is not None and (kept := pool.take(key.target, key.generation)) is not None:
        return kept
    call = client.tunnel()
    try:
        opening = pb.TunnelOpen(sandbox_id=target.capsule_id, port=target.port)
        await call.write(pb.TunnelFrame(open=opening))
        first = await call.read()
    except grpc.aio.AioRpcError as e:
        call.cancel()
        raise _error(e, target.port) from None
    if not isinstance(first, pb.TunnelFrame) or not first.opened:
        call.cancel()
        raise HostAgentError("host agent error")
    return Tunnel(call, target.port, key if pool is not None else None)


async def running_agent(
    db: Database, hosts: capsules.Hosts, access: Access, capsule_id: str
) -> tuple[AgentClient, tuple[object, object]]:
    """The agent of a running capsule of the team, by the proxy's rules: another team's capsule
    is not found (404), a paused one is resumed first if it was made with `auto_resume` and a
    conflict (409) otherwise. Also the capsule's host and start time (see `Key`)."""
    route = hosts.routes.get(ids.SANDBOX.parse(capsule_id, not_found=True))
    if route is not None and route.team_id == access.team_id:
        return await hosts.client_of(route.host), route.generation
    read_at = capsule_routes.generation()
    async with db.sessionmaker() as session, transaction(session):
        sandbox = await capsules.get_capsule(session, access.team_id, capsule_id)
        status, auto_resume = sandbox.status, sandbox.auto_resume
        # A running capsule, the usual case, needs no second look (one transaction less).
        if status == "running":
            route = await hosts.routes.read(session, sandbox, read_at_generation=read_at)
        generation: tuple[object, object] = (sandbox.host_id, sandbox.started_at)
    client = await hosts.client_of(route.host) if route is not None else None
    if client is None:
        if auto_resume and status in ("paused", "starting"):
            await resumed(db, hosts, access.team_id, capsule_id, access.actor)
        elif status == "paused":
            raise InvalidState(
                f"capsule {capsule_id} is paused: resume it "
                f"(POST /v1/capsules/{capsule_id}/resume), or set auto_resume on it, "
                "to reach its ports"
            )
        async with db.sessionmaker() as session, transaction(session):
            sandbox = await capsules.get_capsule(session, access.team_id, capsule_id)
            capsules.require_status(sandbox, "running")
            client = await hosts.client_for(session, sandbox)
            generation = (sandbox.host_id, sandbox.started_at)
    return client, generation


def _error(error: grpc.aio.AioRpcError, port: int) -> Exception:
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        details = error.details() or ""
        if details.startswith("nothing is listening on port"):
            return PortUnreachable(details)
        if "reset" in details:
            return PortUnreachable(f"the connection to port {port} was reset")
    return translate(error)
