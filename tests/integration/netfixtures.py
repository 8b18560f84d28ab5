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
def fake_metadata_server() -> Iterator[Listener]:
    """169.254.169.254:80 bound on a dummy interface of the host."""
    sh("ip", "link", "add", "wtmeta0", "type", "dummy")
    try:
        sh("ip", "addr", "add", "169.254.169.254/32", "dev", "wtmeta0")
        sh("ip", "link", "set", "wtmeta0", "up")
        with host_listener("169.254.169.254", 80, "metadata-secret") as listener:
            yield listener
    finally:
        sh("ip", "link", "del", "wtmeta0", check=False)


@contextlib.contextmanager
def internet_host() -> Iterator[Listener]:
    """A listener at 203.0.113.10:8080 in a namespace routed from the host, standing in for an
    address on the internet."""
    ns = "wtest-inet"
    sh("ip", "netns", "del", ns, check=False)
    sh("ip", "netns", "add", ns)
    proc = None
    try:
        sh("ip", "link", "add", "wtinet0", "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "addr", "add", "10.250.0.1/30", "dev", "wtinet0")
        sh("ip", "link", "set", "wtinet0", "up")
        sh("ip", "-n", ns, "addr", "add", "10.250.0.2/30", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", "203.0.113.10/32", "dev", "lo")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "route", "add", "203.0.113.0/24", "via", "10.250.0.2")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "python3", "-c", LISTENER, "203.0.113.10", "8080", "hello"]
        )
        _wait_listening("203.0.113.10", 8080, netns=ns)
        yield Listener("203.0.113.10", 8080, "hello")
    finally:
        if proc:
            proc.kill()
            proc.wait()
        sh("ip", "route", "del", "203.0.113.0/24", check=False)
        sh("ip", "link", "del", "wtinet0", check=False)
        sh("ip", "netns", "del", ns, check=False)


def host_ipv4_addresses() -> list[str]:
    out = sh("ip", "-4", "-o", "addr", "show")
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


def connect_script(addr: str, port: int, timeout: float = 2.0) -> str:
    """Shell command run inside a capsule: prints the peer's banner or the error."""
    code = (
        "import socket,sys\n"
        "try:\n"
        f" s=socket.create_connection(({addr!r},{port}),timeout={timeout}); print('OK', s.recv(100))\n"
        "except Exception as e:\n"
        " print('FAIL', type(e).__name__)\n"
    )
    return f"python3 -c {_quote(code)}"


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"
