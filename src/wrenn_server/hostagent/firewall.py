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
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from .network import VETH_PREFIX
from .proc import run

log = logging.getLogger(__name__)

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address

TABLE = "inet wrenn"

# Where capsules send DNS (their resolv.conf): redirected by the host to the forwarder on the
# capsule's own gateway. A fixed address rather than the gateway itself, because a capsule keeps
# its resolv.conf across pause/resume and snapshots while its gateway changes with its slot.
CAPSULE_RESOLVER = IPv4Address("169.254.53.53")

# IANA IPv4 Special-Purpose Address Registry (RFC 6890 and updates), plus multicast.
SPECIAL_PURPOSE_V4 = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private use
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link local; cloud metadata services live at 169.254.169.254
    "172.16.0.0/12",  # private use
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation (TEST-NET-1)
    "192.31.196.0/24",  # AS112-v4
    "192.52.193.0/24",  # AMT
    "192.88.99.0/24",  # deprecated 6to4 relay anycast
    "192.168.0.0/16",  # private use
    "192.175.48.0/24",  # direct delegation AS112 service
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",  # documentation (TEST-NET-3)
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved
    "255.255.255.255/32",  # limited broadcast
)

# IANA IPv6 Special-Purpose Address Registry, plus multicast and everything outside global
# unicast (2000::/3): the rest of the space is reserved or unassigned.
SPECIAL_PURPOSE_V6 = (
    "::/128",  # unspecified
    "::1/128",  # loopback
    "::ffff:0:0/96",  # IPv4-mapped: would reach the IPv4 ranges above
    "64:ff9b::/96",  # IPv4/IPv6 translation (NAT64 into IPv4 ranges)
    "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation
    "100::/64",  # discard only
    "100:0:0:1::/64",  # dummy prefix
    "2001::/23",  # IETF protocol assignments (Teredo, benchmarking, ORCHID, AMT, AS112)
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4
    "2620:4f:8000::/48",  # direct delegation AS112 service
    "3fff::/20",  # documentation
    "5f00::/16",  # segment routing SIDs
    "fc00::/7",  # unique local
    "fe80::/10",  # link local
    "fec0::/10",  # deprecated site local
    "ff00::/8",  # multicast
    "::/3",  # not global unicast
    "4000::/2",  # not global unicast
    "8000::/1",  # not global unicast
)


@dataclass(frozen=True)
class EgressPolicy:
    """The operator's additions to the defaults."""

    allow: Sequence[IPNetwork] = ()
    block: Sequence[IPNetwork] = ()


@dataclass(frozen=True)
class HostFacts:
    """What the defaults block beyond the registries: read from the host, they change."""

    subnets: tuple[IPNetwork, ...] = ()
    resolvers: tuple[IPAddress, ...] = ()


def _split(nets: Iterable[IPNetwork]) -> tuple[list[IPv4Network], list[IPv6Network]]:
    v4 = [n for n in nets if isinstance(n, IPv4Network)]
    v6 = [n for n in nets if isinstance(n, IPv6Network)]
    # nft refuses overlapping intervals in one set: merge them here.
    return list(ipaddress.collapse_addresses(v4)), list(ipaddress.collapse_addresses(v6))


def _set(name: str, kind: str, nets: Sequence[IPNetwork]) -> str:
    elements = f"\n        elements = {{ {', '.join(map(str, nets))} }}" if nets else ""
    return f"""    set {name} {{
        type {kind}
        flags interval{elements}
    }}"""


def default_blocklist(facts: HostFacts) -> list[IPNetwork]:
    nets: list[IPNetwork] = [ipaddress.ip_network(n) for n in SPECIAL_PURPOSE_V4]
    nets += [ipaddress.ip_network(n) for n in SPECIAL_PURPOSE_V6]
    nets += facts.subnets
    nets += [ipaddress.ip_network(a) for a in facts.resolvers]
    return nets


def render_ruleset(policy: EgressPolicy, facts: HostFacts) -> str:
    """One nft transaction that replaces the table atomically."""
    block_v4, block_v6 = _split(default_blocklist(facts))
    allow_v4, allow_v6 = _split(policy.allow)
    deny_v4, deny_v6 = _split(policy.block)
    sets = "\n".join(
        (
            _set("block_v4", "ipv4_addr", block_v4),
            _set("block_v6", "ipv6_addr", block_v6),
            _set("allow_v4", "ipv4_addr", allow_v4),
            _set("allow_v6", "ipv6_addr", allow_v6),
            _set("deny_v4", "ipv4_addr", deny_v4),
            _set("deny_v6", "ipv6_addr", deny_v6),
        )
    )
    wv = f'iifname "{VETH_PREFIX}*"'
    return f"""
table {TABLE} {{}}
delete table {TABLE}
table {TABLE} {{
{sets}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        # The capsule's resolver address lands on the forwarder of its own gateway.
        {wv} ip daddr {CAPSULE_RESOLVER} meta l4proto {{ udp, tcp }} th dport 53 redirect
    }}
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        # Redirects are ICMP errors to conntrack ("related"): a capsule must not steer host routes.
        {wv} icmp type {{ redirect, source-quench }} counter drop
        {wv} icmpv6 type nd-redirect counter drop
        {wv} ct state established,related accept
        # DNS to the capsule's own gateway (not another capsule's: it is not on this interface).
        {wv} fib daddr . iif type local meta l4proto {{ udp, tcp }} th dport 53 accept
        {wv} counter drop
    }}
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        {wv} oifname "{VETH_PREFIX}*" counter drop
        {wv} fib daddr type {{ broadcast, multicast }} counter drop
        {wv} ip daddr @deny_v4 counter drop
        {wv} ip daddr @block_v4 ip daddr != @allow_v4 counter drop
        {wv} ip6 daddr @deny_v6 counter drop
        {wv} ip6 daddr @block_v6 ip6 daddr != @allow_v6 counter drop
        # Capsules have no IPv6 address yet; the sets above are ready for when they do.
        {wv} meta nfproto ipv6 counter drop
        {wv} accept
        oifname "{VETH_PREFIX}*" ct state established,related accept
        oifname "{VETH_PREFIX}*" counter drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        {wv} oifname != "{VETH_PREFIX}*" masquerade
    }}
}}
"""


# -- host facts ------------------------------------------------------------------------------


def connected_networks(
    links: list[dict[str, Any]], routes: list[dict[str, Any]]
) -> list[IPNetwork]:
    """Subnets the host reaches without a router: its addresses' prefixes and its routes with no
    gateway (from `ip -j addr` and `ip -j route show table all`). Capsule veths are left out:
    capsule-to-capsule traffic has its own rule, and they would churn the set."""
    out: list[IPNetwork] = []
    for link in links:
        if str(link.get("ifname", "")).startswith(VETH_PREFIX):
            continue
        for a in link.get("addr_info", []):
            with contextlib.suppress(KeyError, ValueError, TypeError):
                out.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network)
            with contextlib.suppress(KeyError, ValueError, TypeError):
                # Point-to-point links name the peer separately.
                out.append(ipaddress.ip_interface(f"{a['address']}/{a['prefixlen']}").network)
    for r in routes:
        dst = r.get("dst")
        if dst in (None, "default") or "gateway" in r or "via" in r or "nexthops" in r:
            continue
        if r.get("type", "unicast") != "unicast" or "dev" not in r:
            continue
        if str(r["dev"]).startswith(VETH_PREFIX):
            continue
        with contextlib.suppress(ValueError, TypeError):
            out.append(ipaddress.ip_network(str(dst), strict=False))
    return out


def parse_resolv_conf(text: str) -> list[IPAddress]:
    out: list[IPAddress] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                out.append(ipaddress.ip_address(parts[1]))
    return out


class Resolvers:
    """The host's upstream resolvers: the configured ones, else /etc/resolv.conf's (re-read when
    the file changes, as DHCP or systemd-resolved rewrite it)."""

    def __init__(
        self, configured: Sequence[IPAddress], path: Path = Path("/etc/resolv.conf")
    ) -> None:
        self.configured = list(configured)
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._cached: list[IPAddress] = []

    def current(self) -> list[IPAddress]:
        if self.configured:
            return self.configured
        try:
            st = os.stat(self.path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key != self._seen:
                self._cached = parse_resolv_conf(self.path.read_text())
                self._seen = key
        except OSError:
            self._cached, self._seen = [], None
        return self._cached


async def _ip_json(*argv: str) -> list[dict[str, Any]]:
    out = await run("ip", "-j", *argv, timeout=15, check=False)
    with contextlib.suppress(ValueError):
        data = json.loads(out or "[]")
        if isinstance(data, list):
            return [d for d in data if isinstance(d, dict)]
    return []


async def read_host_facts(resolvers: Sequence[IPAddress]) -> HostFacts:
    links, routes4, routes6 = await asyncio.gather(
        _ip_json("addr", "show"),
        _ip_json("-4", "route", "show", "table", "all"),
        _ip_json("-6", "route", "show", "table", "all"),
    )
    subnets = connected_networks(links, routes4 + routes6)
    # Sorted and merged, so equal facts compare equal whatever order the kernel listed them in.
    v4, v6 = _split(subnets)
    return HostFacts(subnets=(*v4, *v6), resolvers=_sorted(resolvers))


def _sorted(resolvers: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(sorted(set(resolvers), key=str))


# -- following the host's changes ---------------------------------------------------------------

# rtnetlink: multicast groups of IPv4/IPv6 address and route changes, and the messages they carry.
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
        if pending or applied != _sorted(self.resolvers.current()):
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
