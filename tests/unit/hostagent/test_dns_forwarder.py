"""The capsule DNS forwarder against real sockets on loopback: what it accepts as a query, what
it relays from a (test) upstream resolver and what it refuses to. Its place in the capsule's
network (gateway address, firewall redirect) is tested with real capsules in
tests/integration/test_isolation.py."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rrset
import dns.tsigkeyring
import dns.update
import pytest

from tests.ports import free_port
from wrenn_server.hostagent import dns_forwarder
from wrenn_server.hostagent.dns_forwarder import (
    MAX_INFLIGHT,
    BadQuery,
    DnsForwarder,
    Refused,
    TokenBucket,
    parse_query,
)

LOOPBACK = IPv4Address("127.0.0.1")


def query(name: str = "mirror.example.", rdtype: str = "A", **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]


# -- what is a query ---------------------------------------------------------------------------


def test_standard_queries_pass() -> None:
    for q in (query(), query(rdtype="AAAA", use_edns=0, payload=1232), query(rdtype="ANY")):
        parsed = parse_query(q.to_wire())
        assert parsed.question == q.question


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        query().to_wire()[:-3],  # cut in the question
        query().to_wire() + b"junk",  # trailing bytes
        query().to_wire() + b"\0" * 2000,  # oversized
    ],
)
def test_what_is_not_a_query_is_dropped(wire: bytes) -> None:
    with pytest.raises(BadQuery):
        parse_query(wire)


def test_responses_and_signed_messages_are_dropped() -> None:
    response = dns.message.make_response(query())
    with pytest.raises(BadQuery):
        parse_query(response.to_wire())
    signed = query()
    signed.use_tsig(dns.tsigkeyring.from_text({"k.": "YWJjZA=="}), keyname="k.")
    with pytest.raises(BadQuery):
        parse_query(signed.to_wire())


def _refused_kinds() -> list[dns.message.Message]:
    notify = query()
    notify.set_opcode(dns.opcode.NOTIFY)
    two = query()
    two.question.append(dns.rrset.RRset(dns.name.from_text("other.example."), 1, 1))
    with_answer = query()
    with_answer.answer.append(dns.rrset.from_text("x.example.", 60, "IN", "A", "192.0.2.1"))
    return [
        notify,
        dns.update.UpdateMessage("example."),
        two,
        with_answer,
        query(rdtype="AXFR"),
        query(rdtype="IXFR"),
        dns.message.make_query("version.bind.", "TXT", rdclass=dns.rdataclass.CH),
    ]


@pytest.mark.parametrize("message", _refused_kinds())
def test_queries_we_do_not_forward_are_refused(message: dns.message.Message) -> None:
    with pytest.raises(Refused):
        parse_query(message.to_wire())


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=20, clock=lambda: now[0])
    assert sum(bucket.take() for _ in range(50)) == 20
    now[0] += 0.5  # five more tokens
    assert sum(bucket.take() for _ in range(50)) == 5
    now[0] += 100  # no more than the burst saved up
    assert sum(bucket.take() for _ in range(50)) == 20


# -- against an upstream -------------------------------------------------------------------------


@dataclass
class Upstream:
    """A resolver on 127.0.0.1:port (UDP and TCP) that answers A queries with 192.0.2.99."""

    port: int
    seen: list[dns.message.Message] = field(default_factory=list)
    answer: Callable[[dns.message.Message], bytes | None] | None = None

    def respond(self, wire: bytes) -> bytes | None:
        q = dns.message.from_wire(wire)
        self.seen.append(q)
        if self.answer is not None:
            return self.answer(q)
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.99"))
        return r.to_wire()


class _UpstreamUdp(asyncio.DatagramProtocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.upstream.respond(data)
        if out is not None:
            self.transport.sendto(out, addr)  # type: ignore[attr-defined]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream(free_port())
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(
        lambda: _UpstreamUdp(up), local_addr=("127.0.0.1", up.port)
    )

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        out = up.respond(await reader.readexactly(size))
        if out is not None:
            writer.write(len(out).to_bytes(2, "big") + out)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(tcp, "127.0.0.1", up.port)
    yield up
    udp.close()
    server.close()


def forwarder(up: Upstream, *upstreams: str, **kw: float) -> DnsForwarder:
    addrs = [ip_address(a) for a in (upstreams or ("127.0.0.1",))]
    return DnsForwarder(lambda: addrs, upstream_port=up.port, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("tcp", [False, True])
async def test_relays_the_answer_under_the_clients_id(upstream: Upstream, tcp: bool) -> None:
    q = query()
    out = await forwarder(upstream).answer(q.to_wire(), tcp)
    assert out is not None
    answer = dns.message.from_wire(out)
    assert answer.id == q.id and q.is_response(answer)
    assert answer.answer[0].to_text() == "mirror.example. 60 IN A 192.0.2.99"
    # The resolver saw the same question, under an id of the forwarder's choosing.
    (seen,) = upstream.seen
    assert seen.question == q.question


async def test_upstream_ids_are_the_forwarders(upstream: Upstream) -> None:
    fwd = forwarder(upstream)
    for _ in range(5):
        q = query()
        q.id = 0x4242
        assert (await fwd.answer(q.to_wire(), tcp=False) or b"")[:2] == b"\x42\x42"
    assert {seen.id for seen in upstream.seen} != {0x4242}


async def test_refused_and_dropped_never_reach_the_upstream(upstream: Upstream) -> None:
    fwd = forwarder(upstream)
    out = await fwd.answer(query(rdtype="AXFR").to_wire(), tcp=True)
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.REFUSED
    assert await fwd.answer(b"\x00" * 40, tcp=False) is None
    assert upstream.seen == []


async def test_an_answer_to_another_question_is_not_relayed(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    def spoof(q: dns.message.Message) -> bytes:
        other = dns.message.make_query("bank.example.", "A")
        other.id = q.id
        r = dns.message.make_response(other)
        r.answer.append(dns.rrset.from_text("bank.example.", 60, "IN", "A", "192.0.2.66"))
        return r.to_wire()

    upstream.answer = spoof
    monkeypatch.setattr(dns_forwarder, "UPSTREAM_TIMEOUT", 0.3)
    for tcp in (False, True):
        out = await forwarder(upstream).answer(query().to_wire(), tcp)
        assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL


async def test_a_silent_upstream_is_servfail_after_the_timeout(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.answer = lambda q: None
    monkeypatch.setattr(dns_forwarder, "UPSTREAM_TIMEOUT", 0.3)
    t0 = time.monotonic()
    out = await forwarder(upstream).answer(query().to_wire(), tcp=False)
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - t0 < 2


async def test_a_dead_upstream_fails_over_at_once(upstream: Upstream) -> None:
    """127.0.0.2 has nothing on the port: ECONNREFUSED, not a timeout, then the next one."""
    t0 = time.monotonic()
    out = await forwarder(upstream, "127.0.0.2", "127.0.0.1").answer(query().to_wire(), False)
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.NOERROR
    assert time.monotonic() - t0 < 1
    t0 = time.monotonic()
    out = await forwarder(upstream, "127.0.0.2").answer(query().to_wire(), tcp=True)
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - t0 < 1


async def test_work_in_flight_is_bounded(upstream: Upstream) -> None:
    fwd = forwarder(upstream)
    fwd.inflight = MAX_INFLIGHT
    assert await fwd.answer(query().to_wire(), tcp=False) is None
    assert upstream.seen == []


# -- as a capsule sees it: the listening sockets ---------------------------------------------------


@pytest.fixture
async def listening(upstream: Upstream) -> AsyncIterator[tuple[DnsForwarder, int]]:
    port = free_port()
    fwd = DnsForwarder(lambda: [LOOPBACK], qps=5, port=port, upstream_port=upstream.port)
    await fwd.serve(LOOPBACK)
    yield fwd, port
    await fwd.close()


def udp_exchange(port: int, payloads: list[bytes], wait: float = 1.0) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        for p in payloads:
            s.sendto(p, ("127.0.0.1", port))
        got = []
        try:
            while True:
                got.append(s.recv(65535))
        except TimeoutError:
            return got


def tcp_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        out = b""
        while chunk := s.recv(65535):
            out += chunk
            if len(out) >= 2 and len(out) >= 2 + struct.unpack(">H", out[:2])[0]:
                break
        return out


async def test_serves_udp_and_tcp_and_only_dns(listening: tuple[DnsForwarder, int]) -> None:
    _, port = listening
    q = query()
    (udp,) = await asyncio.to_thread(udp_exchange, port, [q.to_wire(), b"hello"])
    assert q.is_response(dns.message.from_wire(udp))
    wire = q.to_wire()
    out = await asyncio.to_thread(tcp_exchange, port, len(wire).to_bytes(2, "big") + wire)
    assert q.is_response(dns.message.from_wire(out[2:]))
    # Not DNS over TCP: the connection is closed without a byte.
    out = await asyncio.to_thread(tcp_exchange, port, b"GET / HTTP/1.0\r\n\r\n")
    assert out == b""


async def test_a_capsule_is_rate_limited(listening: tuple[DnsForwarder, int]) -> None:
    """qps=5: a burst of ten, then about five a second."""
    _, port = listening
    queries = [query(f"n{i}.example.").to_wire() for i in range(40)]
    answers = await asyncio.to_thread(udp_exchange, port, queries, 1.0)
    assert 10 <= len(answers) <= 17, len(answers)


async def test_tcp_connections_per_capsule_are_bounded(
    listening: tuple[DnsForwarder, int],
) -> None:
    _, port = listening
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            assert await asyncio.to_thread(extra.recv, 10) == b""
    finally:
        for s in held:
            s.close()


async def test_stop_closes_the_sockets(listening: tuple[DnsForwarder, int]) -> None:
    fwd, port = listening
    await fwd.stop(LOOPBACK)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    # ...and a capsule that gets this gateway next can be served again.
    await fwd.serve(LOOPBACK)
    assert len(await asyncio.to_thread(udp_exchange, port, [query().to_wire()])) == 1
