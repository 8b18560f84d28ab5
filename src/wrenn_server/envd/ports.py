"""Listening TCP ports: the sockets in LISTEN state from /proc/net/tcp and /proc/net/tcp6, each
with the process holding it when one is found through /proc/<pid>/fd (gVisor offers both)."""

from __future__ import annotations

import os
import socket
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Optional, Set, Tuple

    Port = Dict[str, object]

TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
LISTEN = "0A"
MAX_PORTS = 1024  # a capsule may open many listeners; the answer stays small
MAX_COMMAND = 512  # characters of a process's command line
MAX_TABLE = 16 << 20  # bytes read of one table
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"  # ::ffff:a.b.c.d


class Socket:
    __slots__ = ("address", "inode", "port")

    def __init__(self, address: str, port: int, inode: int) -> None:
        self.address = address
        self.port = port
        self.inode = inode


def _address(text: str) -> str:
    """An address as the kernel prints it: 32-bit words in hex, each in the host's byte order."""
    raw = b"".join(
        int(text[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(text), 8)
    )
    if len(raw) == 16 and raw[:12] == _V4_MAPPED:
        raw = raw[12:]
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def parse_table(text: str) -> List[Socket]:
    """The listening sockets of one /proc/net/tcp{,6} table; lines it cannot read are skipped."""
    found: List[Socket] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        host, _, port = fields[1].partition(":")
        try:
            if len(host) not in (8, 32):
                raise ValueError(host)
            found.append(Socket(_address(host), int(port, 16), int(fields[9])))
        except ValueError:
            continue
    return found


def _read(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""  # no IPv6 in this kernel, or /proc not mounted


def socket_owners(inodes: Set[int]) -> Dict[int, int]:
    """inode -> pid of a process with that socket open (the lowest pid when several share it)."""
    owners: Dict[int, int] = {}
    if not inodes:
        return owners
    try:
        pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        return owners
    for pid in pids:
        fd_dir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                target = os.readlink("%s/%s" % (fd_dir, fd))
            except OSError:
                continue  # closed meanwhile (the listing's own descriptor, for one)
            if target.startswith("socket:[") and target.endswith("]"):
                inode = int(target[8:-1]) if target[8:-1].isdigit() else 0
                if inode in inodes and inode not in owners:
                    owners[inode] = pid
        if len(owners) == len(inodes):
            break
    return owners


def command(pid: int) -> Optional[str]:
    """A process's command line (arguments joined by spaces), else its name."""
    text = _read("/proc/%d/cmdline" % pid, MAX_COMMAND * 4)
    text = " ".join(part for part in text.split("\x00") if part)
    if not text:
        text = _read("/proc/%d/comm" % pid, 256).strip()
    return text[:MAX_COMMAND] or None


def _rank(address: str) -> int:
    """Which address a port is shown with when it listens on several: every address first,
    loopback last."""
    if address in ("0.0.0.0", "::"):
        return 0
    return 2 if address == "::1" or address.startswith("127.") else 1


def merge(
    sockets: Iterable[Socket], owners: Dict[int, int], skip_ports: Iterable[int], skip_pid: int
) -> List[Tuple[Socket, Optional[int]]]:
    """One entry per port (a service on 0.0.0.0 and :: or on 127.0.0.1 and ::1 is one port),
    with its widest address and an owner where one is known; the skipped ports and the skipped
    process's sockets (envd's own) left out; by port, at most MAX_PORTS."""
    skip = set(skip_ports)
    best: Dict[int, Tuple[Socket, Optional[int]]] = {}
    for sock in sockets:
        pid = owners.get(sock.inode)
        if sock.port in skip or pid == skip_pid:
            continue
        held = best.get(sock.port)
        if held is None:
            best[sock.port] = (sock, pid)
            continue
        wider = _rank(sock.address) < _rank(held[0].address)
        best[sock.port] = (sock if wider else held[0], held[1] if held[1] is not None else pid)
    return [best[port] for port in sorted(best)[:MAX_PORTS]]


def listening(skip_ports: Iterable[int], skip_pid: int) -> List[Port]:
    """The capsule's listening TCP ports as envd answers them."""
    sockets: List[Socket] = []
    for path in TABLES:
        sockets.extend(parse_table(_read(path, MAX_TABLE)))
    owners = socket_owners({s.inode for s in sockets if s.inode})
    ports: List[Port] = []
    for sock, pid in merge(sockets, owners, skip_ports, skip_pid):
        ports.append(
            {
                "port": sock.port,
                "address": sock.address,
                "pid": pid,
                "command": command(pid) if pid is not None else None,
            }
        )
    return ports
