"""Network peers made by the tests themselves, on this machine only: hosts "out on the network"
that live in a network namespace the test creates, reached through routes to it that exist only
while the test runs, a neighbour on a LAN the host is connected to, and a DNS server.

Probes from capsules go only to addresses routed into those namespaces: the fixture fails
before any probe if a route cannot be made, so no packet can leave the machine."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Settings of every agent the tests start (conftest puts them in the environment the agents
# inherit): agents on one host share one firewall table, so they must agree on it.
AGENT_NETWORK_ENV = {
    # Allowed although special-purpose (TEST-NET-2) or the host's own LAN (LAN_SUBNET below);
    # the operator's block wins over the allow.
    "WRENN_AGENT_EGRESS_ALLOW": "198.51.100.128/25,192.0.4.128/25",
    "WRENN_AGENT_EGRESS_BLOCK": "198.51.100.240/28,192.0.5.0/24",
    # A loopback address where nothing listens: a look-up in a test capsule fails at once and
    # never leaves this machine (the default would ask the host's real resolvers).
    "WRENN_AGENT_UPSTREAM_DNS": "127.0.0.153",
}

# A public (not special-purpose) address: "the internet". Routed only into a test namespace.
INTERNET_ADDR = "192.0.3.10"
# A public range the host is connected to in the LAN test (its neighbours are not the internet).
LAN_SUBNET = "192.0.4"

LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[3].encode()); c.close()
"""

# A DNS server that knows one name (A record), over UDP and TCP: stdlib only, so it does not
# share a parser with the forwarder it tests.
DNS_SERVER = r"""
import socket, struct, sys, threading
NAME, ADDR, HOST = sys.argv[1].lower().rstrip("."), socket.inet_aton(sys.argv[2]), sys.argv[3]

def answer(q):
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1 : i + 1 + q[i]].decode("ascii", "replace"))
        i += 1 + q[i]
    qtype, end = struct.unpack(">H", q[i + 1 : i + 3])[0], i + 5
    found = ".".join(labels).lower() == NAME and qtype == 1
    head = q[:2] + struct.pack(">HHHHH", 0x8180 if found else 0x8183, 1, int(found), 0, 0)
    body = q[12:end]
    if found:
        body += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + ADDR
    return head + body

def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 53))  # replies then come from HOST, as the client expects
    while True:
        q, peer = s.recvfrom(4096)
        try:
            s.sendto(answer(q), peer)
        except Exception:
            pass

def client(c):
    with c:
        try:
            n = struct.unpack(">H", c.recv(2))[0]
            q = b""
            while len(q) < n:
                q += c.recv(n - len(q))
            r = answer(q)
            c.sendall(struct.pack(">H", len(r)) + r)
        except Exception:
            pass

threading.Thread(target=udp, daemon=True).start()
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((HOST, 53)); t.listen(16)
while True:
    threading.Thread(target=client, args=(t.accept()[0],), daemon=True).start()
"""


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


@dataclass
class Listener:
    addr: str
    port: int
    banner: str


def _wait_listening(addr: str, port: int, netns: str | None = None) -> None:
    code = f"import socket; socket.create_connection(({addr!r}, {port}), timeout=1).close()"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    for _ in range(50):
        if subprocess.run([*prefix, "python3", "-c", code], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"listener {addr}:{port} did not come up")


@contextlib.contextmanager
def host_listener(addr: str, port: int, banner: str) -> Iterator[Listener]:
    proc = subprocess.Popen(["python3", "-c", LISTENER, addr, str(port), banner])
    try:
        _wait_listening(addr, port)
        yield Listener(addr, port, banner)
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def peer_namespace(name: str, index: int) -> Iterator[str]:
    """A namespace linked to the host by a veth (10.250.<index>.0/30): returns its name."""
    ns, veth = f"wtest-{name}", f"wt{name}"
    link = f"10.250.{index}"
    sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", veth, check=False)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "addr", "add", f"{link}.1/30", "dev", veth)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "-n", ns, "addr", "add", f"{link}.2/30", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        sh("ip", "link", "del", veth, check=False)
        sh("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def _run_in(ns: str, script: str, *args: str) -> Iterator[None]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", script, *args])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def routed_namespace(addrs: Sequence[str], index: int, name: str = "peer") -> Iterator[str]:
    """A namespace holding each of addrs, which the host routes there (/32 each)."""
    routes: list[str] = []
    with peer_namespace(f"{name}{index}", index) as ns:
        try:
            for addr in addrs:
                sh("ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", "lo")
                sh("ip", "route", "add", f"{addr}/32", "via", f"10.250.{index}.2")
                routes.append(addr)
            yield ns
        finally:
            for addr in routes:
                sh("ip", "route", "del", f"{addr}/32", check=False)


@contextlib.contextmanager
def routed_hosts(
    addrs: Sequence[str], port: int, banner: str, index: int
) -> Iterator[list[Listener]]:
    """Listeners at each addr:port in one namespace the host routes them to: stand-ins for
    machines out on the network (the internet, a cloud metadata service) that exist only here."""
    with routed_namespace(addrs, index) as ns, _run_in(ns, LISTENER, "0.0.0.0", str(port), banner):
        # Reachable from the host: whatever a capsule sees is the capsule's restriction.
        for addr in addrs:
            _wait_listening(addr, port)
        yield [Listener(addr, port, banner) for addr in addrs]


@contextlib.contextmanager
def routed_host(addr: str, port: int, banner: str, index: int = 0) -> Iterator[Listener]:
    with routed_hosts([addr], port, banner, index) as (listener,):
        yield listener


def fake_metadata_server() -> contextlib.AbstractContextManager[Listener]:
    return routed_host("169.254.169.254", 80, "metadata-secret", index=1)


def internet_host() -> contextlib.AbstractContextManager[Listener]:
    return routed_host(INTERNET_ADDR, 8080, "hello", index=2)


@contextlib.contextmanager
def lan_neighbours(port: int, banner: str) -> Iterator[list[Listener]]:
    """The host gets a new connected subnet (LAN_SUBNET.0/24 on a veth) with two neighbours on
    it, .2 and .130, listening: a LAN the host sits on, that appears while the agent runs."""
    with peer_namespace("lan", 3) as ns:
        sh("ip", "addr", "add", f"{LAN_SUBNET}.1/24", "dev", "wtlan")
        for host in (2, 130):
            sh("ip", "-n", ns, "addr", "add", f"{LAN_SUBNET}.{host}/24", "dev", "eth0")
        with _run_in(ns, LISTENER, "0.0.0.0", str(port), banner):
            peers = [Listener(f"{LAN_SUBNET}.{h}", port, banner) for h in (2, 130)]
            for peer in peers:
                _wait_listening(peer.addr, port)
            yield peers


@contextlib.contextmanager
def dns_server(addr: str, name: str, answer: str, index: int) -> Iterator[Listener]:
    """A DNS server at addr:53 (UDP and TCP) in a namespace the host routes addr to, answering
    `name` with `answer`. Its neighbour (addr + 1) listens on TCP 8080 with banner "neighbour",
    to show that the route works and only the resolver is blocked."""
    prefix, last = addr.rsplit(".", 1)
    neighbour = f"{prefix}.{int(last) + 1}"
    with (
        routed_namespace([addr, neighbour], index, name="dns") as ns,
        _run_in(ns, LISTENER, neighbour, "8080", "neighbour"),
        _run_in(ns, DNS_SERVER, name, answer, addr),
    ):
        _wait_listening(addr, 53)
        _wait_listening(neighbour, 8080)
        yield Listener(addr, 53, answer)


def host_ipv4_addresses() -> list[str]:
    out = sh("ip", "-4", "-o", "addr", "show")
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


def nft_set(name: str) -> set[str]:
    """The elements (prefixes) of one of the capsule firewall's sets."""
    data = json.loads(sh("nft", "-j", "list", "set", "inet", "wrenn", name))
    out: set[str] = set()
    for item in data["nftables"]:
        for e in item.get("set", {}).get("elem", []):
            if isinstance(e, dict) and "prefix" in e:
                out.add(f"{e['prefix']['addr']}/{e['prefix']['len']}")
            else:
                out.add(json.dumps(e))
    return out


def connect_script(addr: str, port: int, timeout: float = 2.0) -> str:
    """Shell command run inside a capsule: prints the peer's banner or the error."""
    code = (
        "import socket,sys\n"
        "try:\n"
        f" s=socket.create_connection(({addr!r},{port}),timeout={timeout})\n"
        " print('OK', s.recv(100))\n"
        "except Exception as e:\n"
        " print('FAIL', type(e).__name__)\n"
    )
    return f"python3 -c {quote(code)}"


def probe_script(addrs: Sequence[str], port: int, timeout: float = 1.5) -> str:
    """Shell command run inside a capsule: connects to every addr:port at once, prints
    {addr: banner or error} as JSON."""
    code = (
        "import json,socket,threading\n"
        "out={}\n"
        "def go(a):\n"
        " try:\n"
        f"  s=socket.create_connection((a,{port}),timeout={timeout}); out[a]=s.recv(100).decode()\n"
        " except Exception as e:\n"
        "  out[a]='FAIL '+type(e).__name__\n"
        f"ts=[threading.Thread(target=go,args=(a,)) for a in {list(addrs)!r}]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(json.dumps(out))\n"
    )
    return f"python3 -c {quote(code)}"


def dns_query_script(server: str, name: str, tcp: bool, timeout: float = 3.0) -> str:
    """Shell command run inside a capsule: one A query to server:53 by hand (UDP or TCP),
    prints the answer's address, RCODE=<n> or the error."""
    code = (
        "import socket,struct,sys\n"
        "q=struct.pack('>HHHHHH',0x4242,0x0100,1,0,0,0)\n"
        f"q+=b''.join(bytes([len(p)])+p.encode() for p in {name!r}.split('.'))+b'\\0'\n"
        "q+=struct.pack('>HH',1,1)\n"
        "try:\n"
        f" if {tcp!r}:\n"
        f"  s=socket.create_connection(({server!r},53),timeout={timeout})\n"
        "  s.sendall(struct.pack('>H',len(q))+q); n=struct.unpack('>H',s.recv(2))[0]; r=b''\n"
        "  while len(r)<n: r+=s.recv(n-len(r))\n"
        " else:\n"
        f"  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout({timeout})\n"
        f"  s.sendto(q,({server!r},53)); r=s.recvfrom(4096)[0]\n"
        " assert r[:2]==b'\\x42\\x42', 'wrong id'\n"
        " rcode=r[3]&15; an=struct.unpack('>H',r[6:8])[0]\n"
        " print(socket.inet_ntoa(r[-4:]) if rcode==0 and an else 'RCODE=%d' % rcode)\n"
        "except Exception as e:\n"
        " print('FAIL', type(e).__name__)\n"
    )
    return f"python3 -c {quote(code)}"


def quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"
