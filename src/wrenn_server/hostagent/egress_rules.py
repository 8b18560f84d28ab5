"""The capsule firewall's ruleset (one host-wide nftables table, `inet wrenn`): the default
blocklist (IANA special-purpose ranges, multicast, broadcast, the host's connected subnets and
resolvers), the operator's allow and block lists, and the ruleset rendered as one nft transaction.
Why each rule is there: firewall.py."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from .host_facts import HostFacts, IPNetwork, merged
from .network import VETH_PREFIX

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
    block_v4, block_v6 = merged(default_blocklist(facts))
    allow_v4, allow_v6 = merged(policy.allow)
    deny_v4, deny_v6 = merged(policy.block)
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
