"""DNS for capsules whose host resolver they may not reach (127.0.0.53, a resolver on the LAN).

The agent listens on each capsule's gateway address (UDP and TCP port 53; the firewall redirects
the capsule's resolver address there and lets nothing else of the host through). It only speaks
DNS: a datagram or TCP message must parse as a single standard query, class IN, no zone transfer,
no update, no TSIG; anything else is dropped (or REFUSED when it is a well-formed query of a kind
we do not forward). A valid query is re-encoded under a fresh random id and sent to the host's
resolvers; an answer is relayed only if it answers that query. Per capsule: a query rate, a bound
on queries in flight and on TCP connections; overall: a bound on queries in flight. Memory is
bounded by those counts times the largest message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address

MAX_QUERY = 1232  # bytes; real queries are a few hundred at most
MAX_ANSWER = 65535  # TCP's length prefix
UPSTREAM_TIMEOUT = 2.0  # seconds per upstream resolver
MAX_UPSTREAMS = 3  # as many as resolv.conf honours
TCP_IDLE = 10.0  # seconds a capsule's TCP connection may stay silent
MAX_TCP_PER_CAPSULE = 8
MAX_INFLIGHT_PER_CAPSULE = 64
MAX_INFLIGHT = 1024
FORBIDDEN_TYPES = {dns.rdatatype.AXFR, dns.rdatatype.IXFR}


class BadQuery(Exception):
    """Not a DNS query we answer at all: dropped without a reply."""


class Refused(Exception):
    """A well-formed query of a kind we do not forward: answered REFUSED."""

    def __init__(self, query: dns.message.Message) -> None:
        super().__init__("refused")
        self.query = query


def parse_query(wire: bytes) -> dns.message.Message:
    """A standard query with one question, or BadQuery / Refused."""
    if len(wire) < 12 or len(wire) > MAX_QUERY:
        raise BadQuery("size")
    try:
        query = dns.message.from_wire(wire)
    except Exception as e:  # dnspython raises many kinds on malformed input
        raise BadQuery("malformed") from e
    if query.flags & dns.flags.QR:
        raise BadQuery("not a query")
    if dns.opcode.from_flags(query.flags) != dns.opcode.QUERY:
        raise Refused(query)
    if len(query.question) != 1 or query.answer or query.authority or query.additional:
        raise Refused(query)
    question = query.question[0]
    if question.rdclass != dns.rdataclass.IN or question.rdtype in FORBIDDEN_TYPES:
        raise Refused(query)
    return query


def reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes | None:
    try:
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        return response.to_wire()
    except Exception:  # a query dnspython parsed but cannot answer: say nothing
        return None


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = burst, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class DnsForwarder:
    def __init__(
        self,
        upstreams: Callable[[], Sequence[IPAddress]],
        qps: float = 100.0,
        port: int = 53,
        upstream_port: int = 53,
    ) -> None:
        self.upstreams = upstreams
        self.qps = qps
        self.port = port
        self.upstream_port = upstream_port
        self.inflight = 0
        self._listeners: dict[IPv4Address, _Listener] = {}

    async def serve(self, gateway: IPv4Address) -> None:
        """Listen on gateway:53 (UDP and TCP). Idempotent."""
        if gateway in self._listeners:
            return
        listener = _Listener(self, gateway)
        await listener.start()
        self._listeners[gateway] = listener

    async def stop(self, gateway: IPv4Address) -> None:
        listener = self._listeners.pop(gateway, None)
        if listener is not None:
            await listener.close()

    async def close(self) -> None:
        for gateway in list(self._listeners):
            await self.stop(gateway)

    async def answer(self, wire: bytes, tcp: bool) -> bytes | None:
        """The reply to send back for `wire`, or None to send nothing."""
        try:
            query = parse_query(wire)
        except Refused as e:
            return reply(e.query, dns.rcode.REFUSED)
        except BadQuery:
            return None
        if self.inflight >= MAX_INFLIGHT:
            return None
        self.inflight += 1
        try:
            raw = await self._ask(query, tcp)
        finally:
            self.inflight -= 1
        if raw is None:
            raw = reply(query, dns.rcode.SERVFAIL)
        # The capsule's own id back (the upstream saw a fresh one).
        return None if raw is None else wire[:2] + raw[2:]

    async def _ask(self, query: dns.message.Message, tcp: bool) -> bytes | None:
        query.id = secrets.randbelow(1 << 16)
        wire = query.to_wire()
        for upstream in list(self.upstreams())[:MAX_UPSTREAMS]:
            try:
                exchange = self._tcp if tcp else self._udp
                raw = await asyncio.wait_for(exchange(wire, upstream), UPSTREAM_TIMEOUT)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                continue
            if _answers(query, raw):
                return raw
        return None

    async def _udp(self, wire: bytes, upstream: IPAddress) -> bytes:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if upstream.version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            # Connected: the kernel drops datagrams from anyone but the resolver, and a closed
            # port fails at once (ECONNREFUSED) instead of timing out.
            s.connect((str(upstream), self.upstream_port))
            await loop.sock_sendall(s, wire)
            while True:
                raw = await loop.sock_recv(s, MAX_ANSWER)
                if len(raw) >= 12 and raw[:2] == wire[:2]:
                    return raw

    async def _tcp(self, wire: bytes, upstream: IPAddress) -> bytes:
        reader, writer = await asyncio.open_connection(str(upstream), self.upstream_port)
        try:
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(size)
        finally:
            writer.close()


def _answers(query: dns.message.Message, raw: bytes) -> bool:
    try:
        response = dns.message.from_wire(raw, question_only=True)
    except Exception:
        return False
    return bool(query.is_response(response))


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, listener: _Listener) -> None:
        self.listener = listener
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.listener.on_datagram(data, addr)


class _Listener:
    """One capsule's gateway: its sockets, its rate and its work in progress."""

    def __init__(self, forwarder: DnsForwarder, gateway: IPv4Address) -> None:
        self.forwarder = forwarder
        self.gateway = gateway
        self.bucket = TokenBucket(forwarder.qps, 2 * forwarder.qps)
        self.tasks: set[asyncio.Task[None]] = set()
        self.tcp_clients = 0
        self.udp: asyncio.DatagramTransport | None = None
        self.udp_protocol: _Udp | None = None
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = str(self.gateway), self.forwarder.port
        try:
            self.udp, self.udp_protocol = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(host, port)
            )
            self.server = await asyncio.start_server(self._tcp_client, host, port)
        except BaseException:
            await self.close()
            raise

    def on_datagram(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(self.tasks) >= MAX_INFLIGHT_PER_CAPSULE or not self.bucket.take():
            return
        self._spawn(self._udp_query(data, addr))

    async def _udp_query(self, data: bytes, addr: tuple[str | object, int]) -> None:
        answer = await self.forwarder.answer(data, tcp=False)
        if answer is not None and self.udp is not None and not self.udp.is_closing():
            self.udp.sendto(answer, addr)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self.tcp_clients >= MAX_TCP_PER_CAPSULE or task is None:
            writer.close()
            return
        self.tcp_clients += 1
        self.tasks.add(task)
        try:
            await self._serve_tcp(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tcp_clients -= 1
            self.tasks.discard(task)
            writer.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE), "big")
            if size > MAX_QUERY:
                return
            data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
            if not self.bucket.take():
                return
            answer = await self.forwarder.answer(data, tcp=True)
            if answer is None:
                return
            writer.write(len(answer).to_bytes(2, "big") + answer)
            await asyncio.wait_for(writer.drain(), TCP_IDLE)

    async def close(self) -> None:
        if self.udp is not None and self.udp_protocol is not None:
            self.udp.close()
            # The socket closes on a later turn of the loop: the address is free only then,
            # and the next capsule in this slot binds it.
            await self.udp_protocol.closed
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
