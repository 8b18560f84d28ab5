"""Capsules are hostile: each attempt to escape or starve the host must fail or be contained,
while the host and a neighbouring capsule stay healthy."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.ports import free_port
from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.egress_rules import CAPSULE_RESOLVER
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DATA_DIR, SECRET, AgentProcess, CapsuleFactory, wait_for
from .conftest import run_as_root as run  # attacks as the capsule's root
from .netfixtures import (
    INTERNET_ADDR,
    connect_script,
    dns_query_script,
    dns_server,
    fake_metadata_server,
    host_ipv4_addresses,
    host_listener,
    internet_host,
    lan_neighbours,
    nft_set,
    probe_script,
    quote,
    routed_hosts,
    sh,
)
from .traces import capsule_dir

pytestmark = pytest.mark.integration


def _meta(sandbox_id: str) -> dict[str, Any]:
    """The capsule's record (in its handle's directory: not its id's when the pool booted it)."""
    meta: dict[str, Any] = json.loads((capsule_dir(sandbox_id) / "meta.json").read_text())
    return meta


def capsule_ip(sandbox_id: str) -> str:
    return str(_meta(sandbox_id)["net"]["capsule_ip"])


def gateway_ip(sandbox_id: str) -> str:
    return str(_meta(sandbox_id)["net"]["host_ip"])


async def assert_healthy(agent: AgentClient, sandbox_id: str) -> None:
    res = await run(agent, sandbox_id, "echo alive", timeout_sec=30)
    assert res.stdout == b"alive\n"


async def test_cannot_read_host_files(agent: AgentClient, capsule: pb.Sandbox) -> None:
    marker = f"wrenn-escape-{uuid.uuid4().hex}"
    host_file = Path("/tmp") / marker
    host_file.write_text("host secret")
    try:
        sid = capsule.sandbox_id
        for path in (f"/tmp/{marker}", f"/proc/1/root/tmp/{marker}", f"/../../tmp/{marker}"):
            res = await run(agent, sid, f"cat {path}")
            assert res.exit_code != 0 and b"host secret" not in res.stdout
        res = await run(agent, sid, f"find / -xdev -name '{marker}' 2>/dev/null | head -1")
        assert res.stdout == b""
        # The agent's data (other capsules' tokens, templates) is not visible either.
        res = await run(agent, sid, f"ls {DATA_DIR} 2>&1; ls /run/wrenn 2>&1")
        assert b"capsules" not in res.stdout and b"templates" not in res.stdout
    finally:
        host_file.unlink()


async def test_writes_do_not_reach_the_template(agent: AgentClient, capsule: pb.Sandbox) -> None:
    template_passwd = DATA_DIR / "templates/minimal/rootfs/etc/passwd"
    before = template_passwd.read_bytes()
    res = await run(agent, capsule.sandbox_id, "echo 'evil:x:0:0::/:/bin/sh' >> /etc/passwd")
    assert res.exit_code == 0
    assert template_passwd.read_bytes() == before


@contextlib.contextmanager
def public_host_address(addr: str) -> Iterator[str]:
    """The host gets an address in a public range (on a veth pair of its own: this kernel has
    no dummy interfaces): no blocked range covers it, only the input hook keeps capsules off
    it."""
    sh("ip", "link", "del", "wtpub", check=False)
    sh("ip", "link", "add", "wtpub", "type", "veth", "peer", "name", "wtpub-peer")
    try:
        sh("ip", "addr", "add", f"{addr}/32", "dev", "wtpub")
        sh("ip", "link", "set", "wtpub", "up")
        yield addr
    finally:
        sh("ip", "link", "del", "wtpub", check=False)


async def test_cannot_reach_host_agent_or_host_ports(
    agent: AgentClient, agent_process: AgentProcess, capsule: pb.Sandbox
) -> None:
    sid = capsule.sandbox_id
    with (
        public_host_address("192.0.7.1") as public,
        host_listener("0.0.0.0", 18777, "host-service") as listener,
        # Port 53 is open to a capsule on its own gateway only (the DNS forwarder).
        host_listener(public, 53, "host-dns") as dns,
    ):
        targets = [*host_ipv4_addresses(), gateway_ip(sid)]
        assert public in targets
        for addr in targets:
            for port in (agent_process.port, listener.port, 22):
                res = await run(agent, sid, connect_script(addr, port, timeout=1.0))
                assert res.stdout.startswith(b"FAIL"), (addr, port, res.stdout)
        res = await run(agent, sid, connect_script(public, dns.port, timeout=1.0))
        assert res.stdout.startswith(b"FAIL"), res.stdout
        # The same listeners are reachable from the host itself: the block is the capsule's.
        for port in (listener.port, dns.port):
            socket.create_connection((public, port), timeout=2).close()


async def test_cannot_reach_other_capsules(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    a, b = await new_capsule(), await new_capsule()
    res = await run(agent, a.sandbox_id, connect_script(capsule_ip(b.sandbox_id), 49983))
    assert res.stdout.startswith(b"FAIL"), res.stdout


async def test_cannot_reach_metadata_address(agent: AgentClient, capsule: pb.Sandbox) -> None:
    with fake_metadata_server() as meta:
        res = await run(agent, capsule.sandbox_id, connect_script(meta.addr, meta.port))
        assert res.stdout.startswith(b"FAIL"), res.stdout


async def test_egress_to_the_internet_works(agent: AgentClient, capsule: pb.Sandbox) -> None:
    with internet_host() as inet:
        res = await run(agent, capsule.sandbox_id, connect_script(inet.addr, inet.port))
        assert res.stdout.startswith(b"OK") and b"hello" in res.stdout, res.stdout


# Probe addresses and whether a capsule may reach them (the operator's settings are
# AGENT_NETWORK_ENV's).
EGRESS = {
    INTERNET_ADDR: True,  # public: the internet
    "192.0.2.77": False,  # documentation TEST-NET-1
    "198.51.100.10": False,  # documentation TEST-NET-2
    "203.0.113.10": False,  # documentation TEST-NET-3
    "192.88.99.10": False,  # 6to4 relay anycast
    "192.31.196.10": False,  # AS112
    "198.18.0.10": False,  # benchmarking
    "100.64.0.10": False,  # carrier-grade NAT
    "198.51.100.200": True,  # TEST-NET-2, but allowed by the operator
    "198.51.100.250": False,  # inside the allowed range, blocked by the operator
    "192.0.5.10": False,  # public, blocked by the operator
}


async def probe(agent: AgentClient, sandbox_id: str, addrs: list[str], port: int) -> dict[str, str]:
    """addr -> the banner read there, or FAIL <error>, all probed at once from the capsule."""
    res = await run(agent, sandbox_id, probe_script(addrs, port), timeout_sec=30)
    seen: dict[str, str] = json.loads(res.stdout)
    return seen


async def test_special_purpose_ranges_are_blocked_allowed_ranges_are_not(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    with routed_hosts(list(EGRESS), 8080, "reached", index=4):
        sb = await new_capsule()
        seen = await probe(agent, sb.sandbox_id, list(EGRESS), 8080)
        assert {addr: seen[addr] == "reached" for addr in EGRESS} == EGRESS, seen
        # IPv4-mapped IPv6 addresses are the same IPv4 destinations.
        mapped = {f"::ffff:{a}": EGRESS[a] for a in ("198.51.100.10", "198.51.100.200")}
        seen = await probe(agent, sb.sandbox_id, list(mapped), 8080)
        assert {addr: seen[addr] == "reached" for addr in mapped} == mapped, seen


def _in_block_set(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return any("/" in p and ip in ipaddress.ip_network(p) for p in nft_set("block_v4"))


async def test_host_connected_subnets_are_blocked(
    agent: AgentClient, capsule: pb.Sandbox, new_capsule: CapsuleFactory
) -> None:
    """A LAN the host joins while capsules run (public addresses: no special range covers
    it) holds the host's neighbours, not the internet. Half of it is allowed by the operator."""
    with lan_neighbours(8080, "lan-peer") as (neighbour, allowed):
        assert ipaddress.ip_address(neighbour.addr).is_global

        async def in_table() -> bool:
            return _in_block_set(neighbour.addr)

        # The agent follows the host's address changes: capsules that run already and capsules
        # booted since (not the pool's shape) are kept off the new subnet.
        await wait_for(in_table, timeout=10)
        for sb in (capsule, await new_capsule(memory_mb=320)):
            seen = await probe(agent, sb.sandbox_id, [neighbour.addr, allowed.addr], 8080)
            assert seen[neighbour.addr].startswith("FAIL"), seen
            assert seen[allowed.addr] == "lan-peer", seen


async def test_broadcast_does_not_reach_the_host(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    gateway = ipaddress.ip_address(gateway_ip(sid))
    targets = ["255.255.255.255", str(gateway + 2), str(gateway), *host_ipv4_addresses()]
    for line in sh("ip", "-4", "-o", "addr", "show").splitlines():
        if " brd " in line:
            targets.append(line.split(" brd ")[1].split()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("0.0.0.0", 18779))
        code = (
            "import socket\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\n"
            f"for a in {targets!r}:\n"
            "  try: s.sendto(b'capsule', (a, 18779)); print('sent', a)\n"
            "  except OSError as e: print('refused', a, e)\n"
        )
        res = await run(agent, sid, f"python3 -c {quote(code)}")
        assert b"sent 255.255.255.255" in res.stdout, res.stdout
        # A datagram from the host, sent after the capsule's, marks the end of what arrives.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"host", ("127.0.0.1", 18779))
        listener.settimeout(5)
        received = [listener.recv(100)]
        listener.settimeout(0.2)
        with contextlib.suppress(TimeoutError):
            while True:
                received.append(listener.recv(100))
        assert received == [b"host"], received


async def test_capsule_veths_take_no_redirects_and_answer_arp_for_themselves_only(
    capsule: pb.Sandbox,
) -> None:
    """Capsules cannot send raw packets (no CAP_NET_RAW) to try these; the host end of their
    link refuses them anyway."""
    veth = _meta(capsule.sandbox_id)["net"]["veth"]
    conf = Path("/proc/sys/net/ipv4/conf") / veth
    settings = {name: (conf / name).read_text() for name in ("rp_filter", "accept_redirects")}
    settings["arp_ignore"] = (conf / "arp_ignore").read_text()
    assert settings == {"rp_filter": "1\n", "accept_redirects": "0\n", "arp_ignore": "1\n"}
    assert (Path("/proc/sys/net/ipv6/conf") / veth / "disable_ipv6").read_text() == "1\n"


async def test_the_gateway_speaks_only_dns(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    a, b = await new_capsule(), await new_capsule()
    sid, own, other = a.sandbox_id, gateway_ip(a.sandbox_id), gateway_ip(b.sandbox_id)
    res = await run(agent, sid, "cat /etc/resolv.conf")
    assert res.stdout == f"nameserver {CAPSULE_RESOLVER}\n".encode()
    for tcp in (False, True):
        # The test agents' upstream is a loopback address where nothing listens: SERVFAIL, at
        # once, is the forwarder's answer.
        for server in (str(CAPSULE_RESOLVER), own):
            res = await run(agent, sid, dns_query_script(server, "example.test", tcp))
            assert res.stdout == b"RCODE=2\n", (server, tcp, res.stdout)
        # Another capsule's forwarder is not this capsule's to use.
        res = await run(agent, sid, dns_query_script(other, "example.test", tcp, timeout=1.5))
        assert res.stdout.startswith(b"FAIL"), (tcp, res.stdout)
    # What is not a DNS query gets nothing back, over UDP or TCP.
    code = (
        "import socket\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1.5)\n"
        f"s.sendto(b'GET / HTTP/1.0\\r\\n\\r\\n', ({str(CAPSULE_RESOLVER)!r}, 53))\n"
        "try: print('udp', s.recvfrom(4096)[0])\n"
        "except OSError: print('udp silent')\n"
        f"t=socket.create_connection(({own!r}, 53), timeout=5)\n"
        "t.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print('tcp', t.recv(100))\n"
    )
    res = await run(agent, sid, f"python3 -c {quote(code)}", timeout_sec=30)
    assert res.stdout == b"udp silent\ntcp b''\n", res.stdout


RESOLVER = "192.0.6.53"  # public: blocked only because it is the host's resolver


@pytest.fixture
async def resolver_agent(agent_process: AgentProcess, tmp_path: Path) -> AsyncIterator[AgentClient]:
    """A second agent whose upstream resolver is a DNS server in a test namespace (that lives as
    long as the agent does), with the session agent's base template."""
    with dns_server(RESOLVER, "mirror.wrenn.test", "192.0.3.77", index=5):
        data_dir = DATA_DIR.parent / f"{DATA_DIR.name}-resolver"
        shutil.rmtree(data_dir, ignore_errors=True)
        (data_dir / "templates").mkdir(parents=True)
        template = DATA_DIR / "templates" / "minimal"
        await asyncio.to_thread(
            subprocess.run, ["cp", "-a", str(template), str(data_dir / "templates")], check=True
        )
        proc = AgentProcess(
            data_dir,
            free_port(),
            tmp_path / "resolver-agent.log",
            env={
                "WRENN_AGENT_UPSTREAM_DNS": RESOLVER,
                "WRENN_AGENT_POOL_SIZE": "0",
                "WRENN_AGENT_CAPSULE_SUBNET": "10.203.0.0/16",
            },
        )
        proc.start()
        try:
            async with AgentClient(proc.target, SECRET) as client:
                yield client
        finally:
            proc.stop()
            with open("/proc/self/mountinfo") as f:
                if str(data_dir) not in f.read():
                    shutil.rmtree(data_dir, ignore_errors=True)


async def test_capsule_dns_goes_through_the_forwarder_only(resolver_agent: AgentClient) -> None:
    agent = resolver_agent
    sid = (await agent.create_sandbox(pb.CreateSandboxRequest())).sandbox_id
    resolver = str(CAPSULE_RESOLVER)
    try:
        lookup = "python3 -c 'import socket; print(socket.gethostbyname(\"mirror.wrenn.test\"))'"
        res = await run(agent, sid, lookup)
        assert res.stdout == b"192.0.3.77\n", (res.stdout, res.stderr)
        for tcp in (False, True):
            res = await run(agent, sid, dns_query_script(resolver, "mirror.wrenn.test", tcp))
            assert res.stdout == b"192.0.3.77\n", (tcp, res.stdout)
            res = await run(agent, sid, dns_query_script(resolver, "nowhere.test", tcp))
            assert res.stdout == b"RCODE=3\n", (tcp, res.stdout)
            # The resolver itself is not reachable from the capsule...
            direct = dns_query_script(RESOLVER, "mirror.wrenn.test", tcp, timeout=1.5)
            res = await run(agent, sid, direct)
            assert res.stdout.startswith(b"FAIL"), (tcp, res.stdout)
        # ...although its neighbour, through the same route, is.
        res = await run(agent, sid, connect_script("192.0.6.54", 8080))
        assert res.stdout.startswith(b"OK") and b"neighbour" in res.stdout, res.stdout
        # Resumed, the capsule has another gateway but the same resolv.conf: still resolves.
        gateway = (await run(agent, sid, "ip route show default")).stdout
        await agent.pause_sandbox(pb.SandboxRef(sandbox_id=sid))
        await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid))
        assert (await run(agent, sid, "ip route show default")).stdout != gateway
        res = await run(agent, sid, lookup)
        assert res.stdout == b"192.0.3.77\n", (res.stdout, res.stderr)
    finally:
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sid))


async def test_fork_bomb_is_contained(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    neighbour = await new_capsule()
    bomb = await new_capsule(memory_mb=256)
    host_tasks_before = len(os.listdir("/proc"))
    try:
        await run(
            agent,
            bomb.sandbox_id,
            "bomb() { bomb | bomb & }; bomb; sleep 8",
            timeout_sec=15,
        )
    except grpc.aio.AioRpcError as e:
        # The bomb may take its own sandbox down at its memory limit: the agent then reports
        # the capsule dead, and nothing else is touched.
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
    # The host did not fill up with processes: gVisor tasks are not host tasks.
    assert len(os.listdir("/proc")) < host_tasks_before + 200
    await assert_healthy(agent, neighbour.sandbox_id)
    t0 = time.monotonic()
    await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=bomb.sandbox_id))
    assert time.monotonic() - t0 < 30


async def test_memory_hog_is_capped(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    neighbour = await new_capsule()
    hog = await new_capsule(memory_mb=256)
    cgroup = Path(f"/sys/fs/cgroup/memory/wrenn/{hog.sandbox_id}")
    assert int((cgroup / "memory.limit_in_bytes").read_text()) == 256 * 1024 * 1024
    script = (
        "python3 -c 'a=[]\nwhile True: a.append(bytearray(32*1024*1024)); "
        'a[-1][::4096]=b"x"*(len(a[-1])//4096)\''
    )
    res = await run(agent, hog.sandbox_id, script, timeout_sec=60)
    assert res.exit_code != 0 or res.timed_out
    if cgroup.exists():
        peak = int((cgroup / "memory.max_usage_in_bytes").read_text())
        # The kernel may overshoot by a few pages while it reclaims.
        assert peak <= 257 * 1024 * 1024
    await assert_healthy(agent, neighbour.sandbox_id)


async def test_disk_is_capped(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    sb = await new_capsule(disk_size_mb=256)
    res = await run(
        agent, sb.sandbox_id, "dd if=/dev/zero of=/fill bs=1M count=400 2>&1; sync", timeout_sec=60
    )
    assert b"No space left on device" in res.stdout, res.stdout
    image = capsule_dir(sb.sandbox_id) / "disk.img"
    assert image.stat().st_blocks * 512 <= 260 * 1024 * 1024
    res = await run(agent, sb.sandbox_id, "rm /fill && echo freed")
    assert res.stdout == b"freed\n"

    async def too_much() -> AsyncIterator[bytes]:
        block = os.urandom(1024 * 1024)
        for _ in range(300):
            yield block

    # An upload past the limit is refused as such, and leaves no partial file behind.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        header = pb.WriteFileStreamRequest.Header(
            sandbox_id=sb.sandbox_id, path="/root/huge", user="root"
        )
        await agent.write_file_stream(header, too_much())
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    res = await run(agent, sb.sandbox_id, "ls -A /root | grep -c huge")
    assert res.stdout == b"0\n"
