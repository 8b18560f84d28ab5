"""Who may connect to envd: only the host agent, which reaches it from the capsule's gateway.

The host agent talks to envd from the host side of the capsule's veth, which is the capsule's
default gateway. A process inside the capsule connects from one of the capsule's own addresses
(loopback or eth0): taking the gateway's address needs CAP_NET_ADMIN, which the capsule does not
have, and a forged source address cannot complete a TCP handshake (the answer is routed to the
host). So even a process that learnt the token cannot use it, and it cannot tie up envd's
threads with idle connections either: refused connections are closed before a thread starts.
"""

from __future__ import annotations

import socket
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import FrozenSet

ROUTES = "/proc/net/route"
RTF_UP = 0x1
RTF_GATEWAY = 0x2


def gateways(path: str = ROUTES) -> FrozenSet[str]:
    """IPv4 gateways of the routes in the kernel's table (an empty set if it cannot be read)."""
    found = set()
    try:
        with open(path) as f:
            lines = f.read().splitlines()[1:]  # the first line names the columns
    except OSError:
        return frozenset()
    for line in lines:
        fields = line.split()
        try:
            gateway, flags = int(fields[2], 16), int(fields[3], 16)
        except (IndexError, ValueError):
            continue
        if flags & RTF_UP and flags & RTF_GATEWAY and gateway:
            # The table prints the address as a number in the kernel's (native) byte order.
            found.add(socket.inet_ntoa(struct.pack("=I", gateway)))
    return frozenset(found)


class GatewayOnly:
    """Admit connections from a gateway of the capsule's routing table, nothing else."""

    def __init__(self, path: str = ROUTES) -> None:
        self._path = path
        self._known: FrozenSet[str] = frozenset()

    def allows(self, host: str) -> bool:
        if host in self._known:
            return True
        # Read the table again: a checkpoint restored into another capsule's network has
        # another gateway than the one seen before.
        self._known = gateways(self._path)
        return host in self._known


class AnyPeer:
    """No address check (envd outside a capsule, e.g. bound to loopback for tests)."""

    def allows(self, host: str) -> bool:
        return True
