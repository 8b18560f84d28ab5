"""Host agent addresses: one parser for the forms the control plane and the agents use
(`host:port`, `[ipv6]:port`, `unix:/path`), the gRPC target each is dialled at, and the rule
for addresses a tenant chooses.

A BYOC host's agent tells the control plane where to dial it. Dialled as written, such an
address could point the control plane at itself (`127.1`, `[::ffff:127.0.0.1]`, `2130706433`,
`localhost.`), at the cloud's metadata service, or at a socket on its own machine
(`unix:`, `unix-abstract:`). So a tenant's address is parsed into one canonical form, its name
resolved, and every address it resolves to checked (`check_tenant_address`), at registration and
again whenever the control plane dials (a name may resolve differently later: DNS rebinding).
The connection then goes to the address that was checked (`ip_target`), never to the name, and
never through gRPC's own parsing of the raw string.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_LENGTH = 255
RESOLVE_TIMEOUT = 5.0

# Host parts that gRPC would take for a target scheme (`unix-abstract:1234`), not a host.
_GRPC_SCHEMES = frozenset(
    {"unix", "unix-abstract", "dns", "ipv4", "ipv6", "vsock", "xds", "google-c2p"}
)
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# A label as the IPv4 number parser reads it (decimal, octal, hex): a host whose last label is
# one is meant as a number (no top-level domain is numeric), and must be a valid one.
_NUMBER_LABEL_RE = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")

# Cloud instance metadata services: AWS (and its IPv6 form, ECS task metadata, time sync),
# GCP, Azure (IMDS and the wire server), Alibaba, Oracle.
METADATA_IPS = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.169.123",
        "fd00:ec2::254",
        "168.63.129.16",
        "100.100.100.200",
        "192.0.0.192",
    )
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class AddressError(ValueError):
    """An address that is malformed or may not be used; the message is safe to show."""


@dataclass(frozen=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"

    @property
    def target(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class TcpAddress:
    """`host` is an IP address in its canonical form or a lowercase DNS name."""

    host: str
    port: int

    @property
    def ip(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def target(self) -> str:
        """The gRPC target: the address itself, or the name for gRPC's DNS resolver."""
        ip = self.ip
        return ip_target(ip, self.port) if ip is not None else f"dns:///{self.host}:{self.port}"


Address = UnixAddress | TcpAddress


def ip_target(ip: IPAddress, port: int) -> str:
    """A gRPC target that names exactly this address: nothing is resolved."""
    return f"ipv4:{ip}:{port}" if ip.version == 4 else f"ipv6:[{ip}]:{port}"


def parse(text: str) -> Address:
    """`host:port`, `[ipv6]:port` or `unix:/absolute/path` (also `unix:///absolute/path`), in a
    canonical form: IPv4 in any form the system's resolver reads (`127.1`, `2130706433`,
    `0x7f.1`) becomes dotted-quad, an IPv4-mapped IPv6 address the IPv4 address, a name lowercase
    without a trailing dot. Everything else raises AddressError."""
    if not text or len(text) > MAX_LENGTH:
        raise AddressError(f"an address is 1-{MAX_LENGTH} characters")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise AddressError("an address may not contain spaces or control characters")
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/") or path.startswith("//"):
            raise AddressError("a unix socket address is unix:/absolute/path")
        return UnixAddress(path)
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise AddressError("an IPv6 address is written [address]:port")
        return TcpAddress(_ipv6_host(inside), _port(rest[1:]))
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise AddressError("an address is host:port, [ipv6]:port or unix:/path")
    if ":" in host:
        raise AddressError("an IPv6 address must be in brackets: [address]:port")
    return TcpAddress(_host(host), _port(port))


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise AddressError("the port must be a number from 1 to 65535")
    return int(text)


def _ipv6_host(text: str) -> str:
    if "%" in text:
        raise AddressError("IPv6 zone ids are not supported")
    try:
        ip = ipaddress.IPv6Address(text)
    except ValueError:
        raise AddressError(f"{text!r} is not an IPv6 address") from None
    return str(ip.ipv4_mapped or ip)


def _host(text: str) -> str:
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if _NUMBER_LABEL_RE.fullmatch(labels[-1]) and all(labels):
        try:
            # What getaddrinfo accepts as a number: inet_aton's grammar.
            return str(ipaddress.IPv4Address(socket.inet_aton(name)))
        except OSError:
            raise AddressError(f"{text!r} is not a valid IPv4 address") from None
    if len(name) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise AddressError(f"{text!r} is not a valid host name")
    if name in _GRPC_SCHEMES:
        raise AddressError(f"{text!r} is an address scheme, not a host name")
    return name


# The tenant rule -------------------------------------------------------------------------


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, where a router or the kernel may translate it:
    IPv4-mapped, IPv4-compatible, 6to4, NAT64 (well-known prefix), Teredo (client)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def special_use(ip: IPAddress) -> str | None:
    """What makes `ip` an address a tenant may not point the control plane at, or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            why = special_use(embedded)
            if why is not None:
                return f"{why} (as {embedded})"
    if ip in METADATA_IPS:
        return "a cloud metadata service"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved:
        return "reserved"
    if isinstance(ip, ipaddress.IPv6Address) and (ip.is_site_local or ip in _IPV4_COMPATIBLE):
        return "deprecated"
    return None


def _canonical(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class TenantAddressPolicy:
    """Where a tenant's agent may be: anywhere but special-use addresses (`special_use`) and
    the operator's `blocked` networks. `allowed` networks are exempt from the special-use rule
    (a lab whose agents run on the control plane's machine); unix sockets never are."""

    allowed: tuple[IPNetwork, ...] = ()
    blocked: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, allowed: Iterable[str] = (), blocked: Iterable[str] = ()) -> TenantAddressPolicy:
        return cls(
            tuple(ipaddress.ip_network(n, strict=False) for n in allowed),
            tuple(ipaddress.ip_network(n, strict=False) for n in blocked),
        )

    def refusal(self, ip: IPAddress) -> str | None:
        """Why the control plane may not dial `ip` for a tenant, or None."""
        ip = _canonical(ip)
        if any(ip in network for network in self.blocked):
            return "in a network the operator blocked"
        if any(ip in network for network in self.allowed):
            return None
        return special_use(ip)


async def resolve(address: TcpAddress, timeout: float = RESOLVE_TIMEOUT) -> list[IPAddress]:
    """Every address `address` stands for (itself, for an IP address)."""
    if address.ip is not None:
        return [address.ip]
    if address.host == "localhost" or address.host.endswith(".localhost"):
        # Loopback by definition (RFC 6761), whatever a resolver says.
        return [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM), timeout
        )
    except (OSError, TimeoutError):
        raise AddressError(f"{address.host!r} does not resolve") from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = _canonical(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]))
        if ip not in found:
            found.append(ip)
    if not found:
        raise AddressError(f"{address.host!r} does not resolve")
    return found


async def check_tenant_address(
    text: str, policy: TenantAddressPolicy
) -> tuple[TcpAddress, list[IPAddress]]:
    """A tenant's address, parsed, and the addresses it resolves to, every one of them allowed
    (a name with one good and one bad address is refused: either could be dialled)."""
    address = parse(text)
    if isinstance(address, UnixAddress):
        raise AddressError("a team's host must give a network address (host:port)")
    if address.host in METADATA_NAMES:
        raise AddressError(f"a team's host may not use {address.host}: a cloud metadata service")
    ips = await resolve(address)
    for ip in ips:
        why = policy.refusal(ip)
        if why is not None:
            shown = str(address.host) if address.ip is not None else f"{address.host} ({ip})"
            raise AddressError(f"a team's host may not use {shown}: the address is {why}")
    return address, ips


def is_local(text: str) -> bool:
    """A unix socket or a loopback address: nothing crosses a network."""
    try:
        address = parse(text)
    except AddressError:
        return False
    if isinstance(address, UnixAddress):
        return True
    ip = address.ip
    if ip is None:
        return address.host == "localhost"
    return ip.is_loopback
