"""What the capsule firewall reads from the host, because it blocks it: the subnets the host
reaches without a router (`ip -j addr` and `ip -j route`) and its upstream resolvers (configured,
or /etc/resolv.conf's)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from .network import VETH_PREFIX
from .proc import run

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True)
class HostFacts:
    """What the defaults block beyond the registries: read from the host, they change."""

    subnets: tuple[IPNetwork, ...] = ()
    resolvers: tuple[IPAddress, ...] = ()


def merged(nets: Iterable[IPNetwork]) -> tuple[list[IPv4Network], list[IPv6Network]]:
    v4 = [n for n in nets if isinstance(n, IPv4Network)]
    v6 = [n for n in nets if isinstance(n, IPv6Network)]
    # nft refuses overlapping intervals in one set: merge them here.
    return list(ipaddress.collapse_addresses(v4)), list(ipaddress.collapse_addresses(v6))


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
    v4, v6 = merged(subnets)
    return HostFacts(subnets=(*v4, *v6), resolvers=sorted_resolvers(resolvers))


def sorted_resolvers(resolvers: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(sorted(set(resolvers), key=str))
