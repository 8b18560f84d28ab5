"""Network peers made by the tests themselves, on this machine only: a fake metadata server on a
dummy interface, and an "internet" host in a network namespace reached through a routed
documentation range."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[3].encode()); c.close()
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
def routed_host(addr: str, port: int, banner: str, index: int = 0) -> Iterator[Listener]:
    """A listener at addr:port in a namespace the host routes addr to: a stand-in for a machine
    out on the network (the internet, a cloud metadata service), that exists only here."""
    ns, veth = f"wtest-peer{index}", f"wtpeer{index}"
    link = f"10.250.{index}"
    sh("ip", "netns", "del", ns, check=False)
    sh("ip", "netns", "add", ns)
    proc = None
    try:
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "addr", "add", f"{link}.1/30", "dev", veth)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "-n", ns, "addr", "add", f"{link}.2/30", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", "lo")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "route", "add", f"{addr}/32", "via", f"{link}.2")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "python3", "-c", LISTENER, addr, str(port), banner]
        )
        # Reachable from the host: whatever a capsule sees is the capsule's own restriction.
        _wait_listening(addr, port)
        yield Listener(addr, port, banner)
    finally:
        if proc:
            proc.kill()
            proc.wait()
        sh("ip", "route", "del", f"{addr}/32", check=False)
        sh("ip", "link", "del", veth, check=False)
        sh("ip", "netns", "del", ns, check=False)


def fake_metadata_server() -> contextlib.AbstractContextManager[Listener]:
    return routed_host("169.254.169.254", 80, "metadata-secret", index=1)


def internet_host() -> contextlib.AbstractContextManager[Listener]:
    """203.0.113.10 is a documentation address: routed here, it can only be our namespace."""
    return routed_host("203.0.113.10", 8080, "hello", index=2)


def host_ipv4_addresses() -> list[str]:
    out = sh("ip", "-4", "-o", "addr", "show")
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


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
    return f"python3 -c {_quote(code)}"


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"
