"""The capsule firewall's ruleset: what it blocks, what the operator's settings change, and how
the host's own subnets and resolvers are read. That capsules really cannot reach what it blocks
is tested with real capsules in tests/integration/test_isolation.py."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import time
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.egress_rules import (
    SPECIAL_PURPOSE_V4,
    SPECIAL_PURPOSE_V6,
    EgressPolicy,
    render_ruleset,
)
from wrenn_server.hostagent.firewall import changed_interfaces
from wrenn_server.hostagent.host_facts import (
    HostFacts,
    IPNetwork,
    Resolvers,
    connected_networks,
    parse_resolv_conf,
)


def elements(ruleset: str, name: str) -> list[IPNetwork]:
    block = re.search(rf"set {name} {{\n(.*?)\n    }}\n", ruleset, re.S)
    assert block, name
    found = re.search(r"elements = \{ (.*) \}", block.group(1))
    if not found:
        return []
    return [ip_network(e) for e in found.group(1).split(", ")]


def covers(nets: list[IPNetwork], what: str) -> bool:
    target = ip_network(what)
    return any(
        n.version == target.version and target.subnet_of(n)  # type: ignore[arg-type]
        for n in nets
    )


def chain(ruleset: str, name: str) -> list[str]:
    body = re.search(rf"chain {name} {{(.*?)\n    }}", ruleset, re.S)
    assert body, name
    lines = [line.strip() for line in body.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "type "))]


FACTS = HostFacts(
    subnets=(ip_network("192.0.4.0/24"), ip_network("fd00::/64")),
    resolvers=(ip_address("100.100.100.100"), ip_address("8.8.8.8")),
)


def test_every_special_purpose_range_is_blocked() -> None:
    rules = render_ruleset(EgressPolicy(), HostFacts())
    v4, v6 = elements(rules, "block_v4"), elements(rules, "block_v6")
    for net in SPECIAL_PURPOSE_V4:
        assert covers(v4, net), net
    for net in SPECIAL_PURPOSE_V6:
        assert covers(v6, net), net
    # What capsules reached before, and the usual suspects, by address.
    for addr in (
        "192.0.2.1", "198.51.100.7", "203.0.113.10", "169.254.169.254", "100.64.1.1",
        "192.88.99.1", "192.31.196.1", "192.52.193.1", "192.175.48.1", "0.1.2.3",
        "255.255.255.255", "240.0.0.1", "224.0.0.251", "127.0.0.53", "10.0.0.1", "172.31.0.1",
        "192.168.1.1", "192.0.0.9", "198.19.255.255",
    ):  # fmt: skip
        assert covers(v4, addr), addr
    for addr in (
        "::", "::1", "::ffff:10.0.0.1", "::ffff:93.184.216.34", "64:ff9b::a00:1",
        "64:ff9b:1::1", "100::1", "2001::1", "2001:db8::1", "2002:c000:201::1", "3fff::1",
        "fc00::1", "fd12:3456::1", "fe80::1", "fec0::1", "ff02::1", "5f00::1", "::a00:1",
    ):  # fmt: skip
        assert covers(v6, addr), addr


def test_the_internet_is_not_blocked() -> None:
    rules = render_ruleset(EgressPolicy(), FACTS)
    v4, v6 = elements(rules, "block_v4"), elements(rules, "block_v6")
    for addr in ("1.1.1.1", "93.184.216.34", "192.0.3.10", "198.51.101.1", "203.0.114.1"):
        assert not covers(v4, addr), addr
    for addr in ("2606:4700::1111", "2a00:1450:4001::1", "2001:4860:4860::8888"):
        assert not covers(v6, addr), addr


def test_host_subnets_and_resolvers_are_blocked() -> None:
    rules = render_ruleset(EgressPolicy(), FACTS)
    v4, v6 = elements(rules, "block_v4"), elements(rules, "block_v6")
    for what in ("192.0.4.0/24", "100.100.100.100", "8.8.8.8"):
        assert covers(v4, what), what
    assert covers(v6, "fd00::/64")
    assert not covers(v4, "8.8.4.4")


def test_operator_ranges_land_in_their_own_sets_merged() -> None:
    policy = EgressPolicy(
        allow=[ip_network("8.8.8.8/32"), ip_network("10.1.0.0/16"), ip_network("10.1.2.0/24")],
        block=[ip_network("192.0.3.0/25"), ip_network("192.0.3.128/25"), ip_network("2a00::/16")],
    )
    rules = render_ruleset(policy, FACTS)
    assert elements(rules, "allow_v4") == [ip_network("8.8.8.8/32"), ip_network("10.1.0.0/16")]
    assert elements(rules, "allow_v6") == []
    # Overlapping or adjacent ranges are merged: nft refuses overlapping intervals.
    assert elements(rules, "deny_v4") == [ip_network("192.0.3.0/24")]
    assert elements(rules, "deny_v6") == [ip_network("2a00::/16")]


def test_rule_order_gives_the_precedence_the_docs_promise() -> None:
    forward = chain(render_ruleset(EgressPolicy(), FACTS), "forward")
    capsule = [rule for rule in forward if rule.startswith('iifname "wv*"')]
    # Capsule to capsule first: no allowed range opens it. The operator's block beats their
    # allow, which beats the defaults. IPv6 is dropped whatever the sets say.
    assert capsule == [
        'iifname "wv*" oifname "wv*" counter drop',
        'iifname "wv*" fib daddr type { broadcast, multicast } counter drop',
        'iifname "wv*" ip daddr @deny_v4 counter drop',
        'iifname "wv*" ip daddr @block_v4 ip daddr != @allow_v4 counter drop',
        'iifname "wv*" ip6 daddr @deny_v6 counter drop',
        'iifname "wv*" ip6 daddr @block_v6 ip6 daddr != @allow_v6 counter drop',
        'iifname "wv*" meta nfproto ipv6 counter drop',
        'iifname "wv*" accept',
    ]
    assert forward[-1] == 'oifname "wv*" counter drop'


def test_the_host_is_closed_but_for_dns_on_the_capsules_own_gateway() -> None:
    rules = render_ruleset(EgressPolicy(allow=[ip_network("0.0.0.0/0")]), FACTS)
    assert chain(rules, "input") == [
        'iifname "wv*" icmp type { redirect, source-quench } counter drop',
        'iifname "wv*" icmpv6 type nd-redirect counter drop',
        'iifname "wv*" ct state established,related accept',
        'iifname "wv*" fib daddr . iif type local meta l4proto { udp, tcp } th dport 53 accept',
        'iifname "wv*" counter drop',
    ]
    assert chain(rules, "prerouting") == [
        'iifname "wv*" ip daddr 169.254.53.53 meta l4proto { udp, tcp } th dport 53 redirect'
    ]


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
    reason="loading a ruleset needs root and nft",
)
def test_nft_loads_the_ruleset() -> None:
    """In a network namespace of its own (its tables are not the host's)."""
    facts = HostFacts(
        subnets=(ip_network("10.0.0.0/24"), ip_network("192.0.2.0/24"), ip_network("fe80::/64")),
        resolvers=(ip_address("10.255.255.53"), ip_address("127.0.0.53")),
    )
    policy = EgressPolicy(allow=[ip_network("10.0.0.0/25")], block=[ip_network("1.2.3.0/24")])
    out = subprocess.run(
        ["unshare", "--net", "sh", "-c", "nft -f - && nft list table inet wrenn"],
        input=render_ruleset(policy, facts),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "ip daddr @block_v4 ip daddr != @allow_v4" in out.stdout
    assert "10.0.0.0/25" in out.stdout and "1.2.3.0/24" in out.stdout


# -- host facts ------------------------------------------------------------------------------

LINKS: list[dict[str, Any]] = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {
        "ifname": "eth0",
        "addr_info": [
            {"family": "inet", "local": "203.0.113.7", "prefixlen": 26},
            {"family": "inet6", "local": "2001:db8:1::7", "prefixlen": 64},
        ],
    },
    {
        "ifname": "tun0",
        "addr_info": [
            {"family": "inet", "local": "100.70.0.1", "address": "93.184.0.9", "prefixlen": 32}
        ],
    },
    {
        "ifname": "wv0123abcd",
        "addr_info": [{"family": "inet", "local": "10.2.0.1", "prefixlen": 30}],
    },
    {"ifname": "broken", "addr_info": [{"family": "inet"}]},
]
ROUTES: list[dict[str, Any]] = [
    {"dst": "default", "gateway": "203.0.113.1", "dev": "eth0"},
    {"dst": "198.18.5.0/24", "dev": "wg0", "scope": "link"},
    {"dst": "93.184.216.0/24", "gateway": "203.0.113.1", "dev": "eth0"},
    {"dst": "45.0.0.0/8", "nexthops": [{"gateway": "203.0.113.1"}]},
    {"type": "local", "dst": "203.0.113.7", "dev": "eth0", "table": "local"},
    {"type": "broadcast", "dst": "203.0.113.63", "dev": "eth0", "table": "local"},
    {"type": "blackhole", "dst": "5.5.5.0/24"},
    {"dst": "10.2.0.0/30", "dev": "wv0123abcd", "scope": "link"},
    {"dst": "2a01:4f8::/64", "dev": "eth1"},
]


def test_connected_networks_are_read_from_addresses_and_gatewayless_routes() -> None:
    nets = {str(n) for n in connected_networks(LINKS, ROUTES)}
    assert nets == {
        "127.0.0.0/8",
        "203.0.113.0/26",
        "2001:db8:1::/64",
        "100.70.0.1/32",
        "93.184.0.9/32",
        "198.18.5.0/24",
        "2a01:4f8::/64",
    }


def test_resolv_conf_nameservers() -> None:
    text = "# generated\nsearch corp\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n"
    text += "nameserver not-an-address\noptions edns0\n"
    assert [str(a) for a in parse_resolv_conf(text)] == ["127.0.0.53", "fe80::1%eth0"]


def test_resolvers_follow_the_file_unless_configured(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.0.0.2\n")
    resolvers = Resolvers([], conf)
    assert resolvers.current() == [ip_address("10.0.0.2")]
    # DHCP rewrites the file (a new inode or the same one, a new mtime).
    new = tmp_path / "resolv.conf.new"
    new.write_text("nameserver 10.0.0.3\nnameserver 10.0.0.4\n")
    new.rename(conf)
    assert resolvers.current() == [ip_address("10.0.0.3"), ip_address("10.0.0.4")]
    conf.write_text("nameserver 10.0.0.5\n")
    os.utime(conf, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert resolvers.current() == [ip_address("10.0.0.5")]
    conf.unlink()
    assert resolvers.current() == []
    pinned = Resolvers([ip_address("192.0.6.53")], conf)
    assert pinned.current() == [ip_address("192.0.6.53")]


def test_settings_take_comma_separated_or_json_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRENN_AGENT_EGRESS_ALLOW", "10.1.2.0/24, 192.0.2.5")
    monkeypatch.setenv("WRENN_AGENT_EGRESS_BLOCK", '["2001:db8::/32"]')
    monkeypatch.setenv("WRENN_AGENT_UPSTREAM_DNS", "127.0.0.53 fd00::1")
    s = AgentSettings()
    assert s.egress_allow == [ip_network("10.1.2.0/24"), ip_network("192.0.2.5/32")]
    assert s.egress_block == [ip_network("2001:db8::/32")]
    assert s.upstream_dns == [ip_address("127.0.0.53"), ip_address("fd00::1")]
    # A range with host bits set is refused, not silently widened or narrowed.
    monkeypatch.setenv("WRENN_AGENT_EGRESS_ALLOW", "10.1.2.3/24")
    with pytest.raises(ValueError, match="egress_allow"):
        AgentSettings()


def _nlmsg(kind: int, body: bytes) -> bytes:
    msg = struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body
    return msg + b"\0" * (-len(msg) % 4)


def _rtattr(kind: int, data: bytes) -> bytes:
    attr = struct.pack("=HH", 4 + len(data), kind) + data
    return attr + b"\0" * (-len(attr) % 4)


def test_netlink_changes_name_their_interface() -> None:
    """What the agent watches to refresh the table: every change but a capsule veth's."""
    new_addr = _nlmsg(20, struct.pack("=BBBBI", 2, 24, 0, 0, 7) + _rtattr(1, bytes(4)))
    rtmsg = struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, 2, 253, 1, 0)
    new_route = _nlmsg(24, rtmsg + _rtattr(1, bytes(4)) + _rtattr(4, struct.pack("=I", 9)))
    multipath = _nlmsg(25, rtmsg + _rtattr(9, bytes(8)))
    assert changed_interfaces(new_addr + new_route + multipath) == [7, 9, None]
    assert changed_interfaces(b"") == []
    assert changed_interfaces(b"\xff" * 10) == []


def test_only_capsule_veths_are_capsule_links() -> None:
    from wrenn_server.hostagent.firewall import _CapsuleLinks

    links = _CapsuleLinks()
    assert not links.is_capsule(socket.if_nametoindex("lo"))
    assert not links.is_capsule(None)
    assert not links.is_capsule(2**31 - 1)  # gone, never seen: counts as the host's
    links.known[2**31 - 2] = True  # a veth seen before it was deleted
    assert links.is_capsule(2**31 - 2)
