"""Agent addresses: the parser's canonical forms, and the tenant rule against every way of
writing a special-use address that was used to get past the old check."""

from __future__ import annotations

import ipaddress

import pytest

from wrenn_server.addresses import (
    AddressError,
    TcpAddress,
    TenantAddressPolicy,
    UnixAddress,
    check_tenant_address,
    ip_target,
    is_local,
    parse,
    special_use,
)

DEFAULT = TenantAddressPolicy()


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10.1.2.3:7000", TcpAddress("10.1.2.3", 7000)),
        ("Agent-1.Example.COM.:443", TcpAddress("agent-1.example.com", 443)),
        ("[2001:DB8::1]:7000", TcpAddress("2001:db8::1", 7000)),
        ("[::ffff:203.0.113.9]:7000", TcpAddress("203.0.113.9", 7000)),
        ("127.1:7000", TcpAddress("127.0.0.1", 7000)),
        ("2130706433:7000", TcpAddress("127.0.0.1", 7000)),
        ("0x7f.1:7000", TcpAddress("127.0.0.1", 7000)),
        ("0177.0.0.1:7000", TcpAddress("127.0.0.1", 7000)),
        ("0xa9fea9fe:80", TcpAddress("169.254.169.254", 80)),
        ("10.1.2.3:07000", TcpAddress("10.1.2.3", 7000)),
        ("unix:/run/wrenn/agent.sock", UnixAddress("/run/wrenn/agent.sock")),
        ("unix:///run/wrenn/agent.sock", UnixAddress("/run/wrenn/agent.sock")),
    ],
)
def test_parse_gives_one_canonical_form(text: str, parsed: object) -> None:
    assert parse(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.0.0.1",
        "no port:80",
        "http://10.0.0.1:80",
        "a:b",
        "10.0.0.1:123456",
        "10.0.0.1:0",
        "10.0.0.1:+80",
        "::1:7000",
        "[::1]7000",
        "[fe80::1%eth0]:7000",
        "[not-v6]:7000",
        "1.2.3.4.5:80",
        "256.1.1.1:80",
        "0x:80",
        "unix-abstract:1234",
        "unix-abstract:wrenn",
        "dns:///10.0.0.1:80",
        "ipv4:127.0.0.1:80",
        "vsock:3:80",
        "unix:relative.sock",
        "unix://host/run.sock",
        "under_score.example:80",
        "bad\n.example:80",
        "a" * 300 + ":80",
    ],
)
def test_parse_refuses_what_is_not_an_address(text: str) -> None:
    with pytest.raises(AddressError):
        parse(text)


def test_targets_name_the_parsed_address_only() -> None:
    assert parse("127.1:7000").target == "ipv4:127.0.0.1:7000"
    assert TcpAddress("10.1.2.3", 7).target == "ipv4:10.1.2.3:7"
    assert TcpAddress("2001:db8::1", 7).target == "ipv6:[2001:db8::1]:7"
    assert TcpAddress("agent.example.com", 7).target == "dns:///agent.example.com:7"
    assert UnixAddress("/run/a.sock").target == "unix:/run/a.sock"
    assert ip_target(ipaddress.ip_address("::1"), 9) == "ipv6:[::1]:9"
    assert str(TcpAddress("2001:db8::1", 7)) == "[2001:db8::1]:7"


# Every one of these reached the control plane itself, its metadata service or a local socket.
BYPASSES = [
    "127.0.0.1:7000",
    "127.8.9.10:7000",
    "127.1:7000",
    "2130706433:7000",
    "0x7f.1:7000",
    "0x7f000001:7000",
    "0177.0.0.1:7000",
    "017700000001:7000",
    "[::1]:7000",
    "[::ffff:127.0.0.1]:7000",
    "[::ffff:7f00:1]:7000",
    "[0:0:0:0:0:ffff:127.0.0.1]:7000",
    "[::127.0.0.1]:7000",
    "[2002:7f00:1::]:7000",
    "[64:ff9b::127.0.0.1]:7000",
    "[::]:7000",
    "0.0.0.0:7000",
    "0:7000",
    "0.1.2.3:7000",
    "localhost:7000",
    "LOCALHOST.:7000",
    "agent.localhost:7000",
    "169.254.169.254:80",
    "[::ffff:169.254.169.254]:80",
    "2852039166:80",
    "169.254.170.2:80",
    "[fd00:ec2::254]:80",
    "100.100.100.200:80",
    "metadata.google.internal:80",
    "metadata:80",
    "[fe80::1]:7000",
    "224.0.0.1:7000",
    "[ff02::1]:7000",
    "255.255.255.255:7000",
    "240.0.0.1:7000",
    "unix:/run/wrenn/agent.sock",
    "unix:///run/wrenn/agent.sock",
    "unix-abstract:wrenn-agent",
]


@pytest.mark.parametrize("text", BYPASSES)
async def test_a_tenant_may_not_use_special_addresses(text: str) -> None:
    with pytest.raises(AddressError) as refused:
        await check_tenant_address(text, DEFAULT)
    assert str(refused.value)  # a message to show, not an empty 400


@pytest.mark.parametrize(
    ("text", "ips"),
    [
        ("192.0.2.10:7000", ["192.0.2.10"]),
        ("10.1.2.3:7000", ["10.1.2.3"]),
        ("[2001:db8::5]:7000", ["2001:db8::5"]),
        ("[::ffff:203.0.113.9]:7000", ["203.0.113.9"]),
        ("[2002:cb00:7109::1]:7000", ["2002:cb00:7109::1"]),
        ("3405803786:7000", ["203.0.113.10"]),
    ],
)
async def test_a_tenant_may_use_other_addresses(text: str, ips: list[str]) -> None:
    _address, resolved = await check_tenant_address(text, DEFAULT)
    assert [str(ip) for ip in resolved] == ips


async def test_names_are_checked_by_what_they_resolve_to() -> None:
    # `localhost` resolves on every machine; a name that does not resolve is refused too.
    with pytest.raises(AddressError, match="loopback"):
        await check_tenant_address("localhost:7000", DEFAULT)
    with pytest.raises(AddressError, match="does not resolve"):
        await check_tenant_address("no-such-host.invalid:7000", DEFAULT)


async def test_the_operator_may_allow_or_block_networks() -> None:
    lab = TenantAddressPolicy.of(allowed=["127.0.0.0/8"], blocked=["10.0.0.0/8"])
    address, ips = await check_tenant_address("127.1:7000", lab)
    assert (str(address), [str(ip) for ip in ips]) == ("127.0.0.1:7000", ["127.0.0.1"])
    with pytest.raises(AddressError, match="operator"):
        await check_tenant_address("10.1.2.3:7000", lab)
    with pytest.raises(AddressError):
        await check_tenant_address("[::1]:7000", lab)  # only what was allowed
    with pytest.raises(AddressError):
        await check_tenant_address("unix:/run/a.sock", lab)  # sockets never


def test_special_use_names_the_reason() -> None:
    assert special_use(ipaddress.ip_address("::ffff:127.0.0.1")) == "loopback (as 127.0.0.1)"
    assert special_use(ipaddress.ip_address("169.254.169.254")) == "a cloud metadata service"
    assert special_use(ipaddress.ip_address("8.8.8.8")) is None


@pytest.mark.parametrize(
    ("text", "local"),
    [
        ("unix:/run/a.sock", True),
        ("127.0.0.1:1", True),
        ("[::1]:1", True),
        ("localhost:1", True),
        ("0.0.0.0:1", False),
        ("10.0.0.1:1", False),
        ("garbage", False),
    ],
)
def test_is_local(text: str, local: bool) -> None:
    assert is_local(text) is local
