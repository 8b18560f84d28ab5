"""envd's listening ports: /proc/net/tcp{,6} text as the kernel writes it read into sockets in
LISTEN state, and GET /ports on a real envd naming real listeners on this machine (the process
holding each, v4 and v6 of one port once, envd's own port left out)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.ports import free_port
from wrenn_server.envd import ports

if TYPE_CHECKING:
    from conftest import Envd

# As Linux writes them (x86: each 32-bit word of an address in little-endian order), with a
# listener on 127.0.0.1:8123, one on 0.0.0.0:8000, an established connection and a TIME_WAIT.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1FBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40817 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 40818 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 40900 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:A0B2 0100007F:1F40 06 00000000:00000000 03:000016A8 00000000     0        0 0 3 0000000000000000
"""  # noqa: E501
# :: port 8000, ::1 port 3000, an IPv4-mapped 127.0.0.1 port 5000, and a broken line.
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 40819 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40820 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40821 1 0000000000000000 100 0 0 10 0
   3: 0000ZZ:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40822 1
"""  # noqa: E501

little_endian = pytest.mark.skipif(
    sys.byteorder != "little", reason="the sample tables are a little-endian kernel's"
)


@little_endian
def test_the_kernels_tables_are_read_into_listening_sockets() -> None:
    found = [(s.address, s.port, s.inode) for s in ports.parse_table(TCP)]
    assert found == [("127.0.0.1", 8123, 40817), ("0.0.0.0", 8000, 40818)]
    found = [(s.address, s.port, s.inode) for s in ports.parse_table(TCP6)]
    assert found == [("::", 8000, 40819), ("::1", 3000, 40820), ("127.0.0.1", 5000, 40821)]


@little_endian
def test_one_entry_per_port_with_its_widest_address_and_a_known_owner() -> None:
    sockets = ports.parse_table(TCP) + ports.parse_table(TCP6)
    owners = {40817: 40, 40819: 41, 40821: 1}
    merged = [(s.address, s.port, pid) for s, pid in ports.merge(sockets, owners, [3000], 1)]
    # 8000: 0.0.0.0 (no owner found) and :: (pid 41) are one port; 3000 is skipped by port,
    # 5000 because the skipped process (envd) holds it.
    assert merged == [("0.0.0.0", 8000, 41), ("127.0.0.1", 8123, 40)]


def test_this_machines_table_holds_a_real_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with open("/proc/net/tcp") as f:
            table = ports.parse_table(f.read())
        inode = next(s.inode for s in table if s.port == port and s.address == "127.0.0.1")
        assert ports.socket_owners({inode}) == {inode: os.getpid()}


@pytest.fixture
def http_servers(tmp_path: Path) -> Iterator[tuple[int, int, subprocess.Popen[bytes]]]:
    """python's http.server on 127.0.0.1 (serving a folder with a name in UTF-8), and a socket
    on 0.0.0.0 and :: of one port."""
    port = free_port()
    folder = tmp_path / "café"
    folder.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    v4, v6 = socket.socket(), socket.socket(socket.AF_INET6)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    v4.bind(("0.0.0.0", 0))
    both = v4.getsockname()[1]
    v6.bind(("::", both))
    v4.listen()
    v6.listen()
    try:
        yield port, both, server
    finally:
        server.kill()
        server.wait()
        v4.close()
        v6.close()


def _listed(envd: Envd, port: int, deadline: float) -> dict[str, Any]:
    while True:
        resp = envd.client.get("/ports")
        assert resp.status_code == 200, resp.text
        entries = [p for p in resp.json()["ports"] if p["port"] == port]
        assert len(entries) <= 1, entries
        if entries and entries[0]["pid"] is not None:
            return dict(entries[0])
        assert time.monotonic() < deadline, resp.json()
        time.sleep(0.05)


def test_get_ports_names_real_listeners_and_their_processes(
    envd: Envd, http_servers: tuple[int, int, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port, both, server = http_servers
    deadline = time.monotonic() + 15
    entry = _listed(envd, port, deadline)
    assert entry["address"] == "127.0.0.1"
    assert entry["pid"] == server.pid
    assert entry["command"] == (
        f"{sys.executable} -m http.server {port} --bind 127.0.0.1 -d {tmp_path / 'café'}"
    )
    entry = _listed(envd, both, deadline)  # v4 and v6 of one port: one entry
    assert (entry["address"], entry["pid"]) == ("0.0.0.0", os.getpid())
    listed = [p["port"] for p in envd.client.get("/ports").json()["ports"]]
    assert envd.port not in listed
    assert listed == sorted(listed)


def test_a_closed_listener_leaves_the_list(envd: Envd) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    _listed(envd, port, time.monotonic() + 15)
    sock.close()
    deadline = time.monotonic() + 15
    while port in [p["port"] for p in envd.client.get("/ports").json()["ports"]]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
