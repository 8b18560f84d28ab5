"""What capsules may reach: one host-wide nftables table, `inet wrenn`.

Capsule traffic (host-side veths are named `wv*`) may leave through NAT to the internet and to
nothing else: not the host (except the DNS forwarder on the capsule's own gateway), not another
capsule, no special-purpose range (IANA IPv4 and IPv6 special-purpose registries, multicast,
broadcast), not the host's own connected subnets and not the host's resolvers. The operator can
allow ranges (an internal package mirror on the LAN: allow wins over the defaults) and block more
(their block wins over their allow).

The table is replaced in one transaction (no moment without rules) at agent start and whenever
the host's addresses, routes (rtnetlink events) or resolv.conf change, so a subnet that appears
later (a new VPN, a second NIC) is blocked too. Agents that share a host share this table: the
last one to write it wins, so they must share their network settings.

The ruleset is egress_rules.py's; what it reads from the host, host_facts.py's. This module
applies it and follows the host's changes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from pathlib import Path

from .egress_rules import EgressPolicy, render_ruleset
from .host_facts import HostFacts, Resolvers, read_host_facts, sorted_resolvers
from .network import VETH_PREFIX
from .proc import run

log = logging.getLogger(__name__)

# -- following the host's changes ---------------------------------------------------------------

_RTMGRP = 0x10 | 0x40 | 0x100 | 0x400
_RTM_ADDR = (20, 21)  # RTM_NEWADDR, RTM_DELADDR
_RTM_ROUTE = (24, 25)  # RTM_NEWROUTE, RTM_DELROUTE
_RTA_OIF = 4


def _route_oif(attrs: bytes) -> int | None:
    offset = 0
    while offset + 4 <= len(attrs):
        length, kind = struct.unpack_from("=HH", attrs, offset)
        if length < 4:
            return None
        if kind == _RTA_OIF and length >= 8:
            return int(struct.unpack_from("=I", attrs, offset + 4)[0])
        offset += (length + 3) & ~3
    return None


def changed_interfaces(data: bytes) -> list[int | None]:
    """The interface index each rtnetlink message in `data` is about (None: unknown, or a
    route through several)."""
    out: list[int | None] = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        body = data[offset + 16 : offset + length]
        index = None
        if kind in _RTM_ADDR and len(body) >= 8:
            index = int(struct.unpack_from("=I", body, 4)[0])
        elif kind in _RTM_ROUTE and len(body) >= 12:
            index = _route_oif(body[12:])
        out.append(index)
        offset += (length + 3) & ~3
    return out


class _CapsuleLinks:
    """Which interface indexes are capsule veths, remembered so that their deletion (the name
    is gone by then) is recognised too."""

    def __init__(self) -> None:
        self.known: dict[int, bool] = {}

    def is_capsule(self, index: int | None) -> bool:
        if index is None:
            return False
        if index not in self.known:
            try:
                self.known[index] = socket.if_indextoname(index).startswith(VETH_PREFIX)
            except OSError:
                return False
            if len(self.known) > 65536:  # capsules come and go: forget the oldest
                self.known.pop(next(iter(self.known)))
        return self.known[index]


# -- the table ---------------------------------------------------------------------------------


class Firewall:
    def __init__(self, policy: EgressPolicy, resolvers: Resolvers) -> None:
        self.policy = policy
        self.resolvers = resolvers
        self._lock = asyncio.Lock()
        self._applied: HostFacts | None = None
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Install the table (replacing what another agent or an older run left), turn
        forwarding on, and follow the host's address and route changes."""
        async with self._lock:
            await self._apply(await read_host_facts(self.resolvers.current()))
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        if not self._tasks:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE
            )
            sock.bind((0, _RTMGRP))
            self._tasks = [
                asyncio.create_task(self._watch(sock)),
                asyncio.create_task(self._refresher()),
            ]

    async def ensure_current(self) -> None:
        """Before a capsule boots: the table reflects the host's latest addresses and resolvers.
        Cheap unless something changed (the resolv.conf check is a stat)."""
        pending = self._changed.is_set()
        applied = self._applied.resolvers if self._applied else None
        if pending or applied != sorted_resolvers(self.resolvers.current()):
            await self.refresh()
        else:
            # A refresh under way finishes first.
            async with self._lock:
                pass

    async def refresh(self) -> None:
        """Re-apply if the host's facts changed since the last apply."""
        async with self._lock:
            facts = await read_host_facts(self.resolvers.current())
            if facts != self._applied:
                await self._apply(facts)

    async def _apply(self, facts: HostFacts) -> None:
        await run("nft", "-f", "-", input=render_ruleset(self.policy, facts).encode())
        log.info(
            "capsule egress: blocking connected subnets %s and resolvers %s",
            ", ".join(map(str, facts.subnets)) or "-",
            ", ".join(map(str, facts.resolvers)) or "-",
        )
        self._applied = facts

    async def _watch(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        links = _CapsuleLinks()
        with sock:
            while True:
                try:
                    data = await loop.sock_recv(sock, 1 << 16)
                except OSError:
                    # ENOBUFS: events were lost, so something may have changed.
                    self._changed.set()
                    continue
                # Capsule veths come and go with every capsule: not the host's networks.
                if not all(links.is_capsule(i) for i in changed_interfaces(data)):
                    self._changed.set()

    async def _refresher(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing the capsule firewall failed")
                await asyncio.sleep(1)
                self._changed.set()
