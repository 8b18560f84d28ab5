"""Capsule networking: one network namespace, veth pair and /30 per capsule. What capsules may
reach is firewall.py's host-wide table.

Its rules match the host-side interface prefix (`wv`), so a capsule needs no rules of its own:
deleting its veth removes it from the firewall's view, and the firewall keeps protecting capsules
that outlive a crashed agent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from . import errors
from .proc import run, run_quiet

log = logging.getLogger(__name__)

VETH_PREFIX = "wv"
NETNS_PREFIX = "wrn-"
IPAM_DIR = Path("/run/wrenn/ipam")
ROUTE_TABLE = Path("/proc/net/route")  # the host's IPv4 routes (the agent's network namespace)
_CLAIM = ".claim-"  # a slot being claimed: written whole, then linked to the slot's name


@dataclass(frozen=True)
class CapsuleNet:
    """Names and addresses of one capsule's network. Derived from the capsule id and its slot."""

    netns: str
    veth: str
    host_ip: IPv4Address
    capsule_ip: IPv4Address

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def to_dict(self) -> dict[str, str]:
        return {
            "netns": self.netns,
            "veth": self.veth,
            "host_ip": str(self.host_ip),
            "capsule_ip": str(self.capsule_ip),
        }

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> CapsuleNet:
        return cls(
            netns=d["netns"],
            veth=d["veth"],
            host_ip=IPv4Address(d["host_ip"]),
            capsule_ip=IPv4Address(d["capsule_ip"]),
        )


def names_for(capsule_key: str) -> tuple[str, str]:
    """netns and host-side veth names (veth names are at most 15 bytes)."""
    return NETNS_PREFIX + capsule_key, VETH_PREFIX + capsule_key


class Ipam:
    """Hands out /30 slots of the capsule subnet, host-wide.

    A slot is a file under /run/wrenn/ipam that names its owner, so agents sharing a host
    (several data dirs) never collide and leftovers can be reclaimed. It appears with its owner
    already in it (a finished claim file hard-linked to the slot's name, which fails if the slot
    is taken): an agent killed mid-claim leaves no slot without an owner, only its claim file.
    """

    def __init__(
        self, subnet: IPv4Network, root: Path = IPAM_DIR, routes: Path = ROUTE_TABLE
    ) -> None:
        self.subnets = list(subnet.subnets(new_prefix=30))
        self.root = root
        self.routes = routes
        self._next = 0

    def allocate(self, owner: str) -> IPv4Network:
        """A free slot, owned by `owner` until released. Slots the host already routes are
        skipped though no file claims them (an interface left by a crashed agent whose slot
        files are gone, or an operator's): a capsule given one would be unreachable."""
        self.root.mkdir(parents=True, exist_ok=True)
        claim = self.root / f"{_CLAIM}{os.getpid()}-{secrets.token_hex(4)}"
        claim.write_text(owner)
        routed = _routed_slots(self.routes)
        try:
            n = len(self.subnets)
            for i in range(n):
                net = self.subnets[(self._next + i) % n]
                if net in routed:
                    continue
                try:
                    os.link(claim, self.root / str(net.network_address))
                except FileExistsError:
                    continue
                self._next = (self._next + i + 1) % n
                return net
        finally:
            claim.unlink()
        # The caller's RESOURCE_EXHAUSTED (the control plane's 503), not an INTERNAL error:
        # capsules being destroyed free addresses, and other hosts may have some.
        raise errors.ResourceExhausted("the host has no free capsule network address")

    def release(self, net: IPv4Network | IPv4Address, owner: str) -> None:
        """Free the slot (given as itself or any address in it) if `owner` holds it."""
        if isinstance(net, IPv4Address):
            net = ipaddress.IPv4Network(f"{net}/30", strict=False)
        path = self.root / str(net.network_address)
        with contextlib.suppress(FileNotFoundError):
            if path.read_text() == owner:
                path.unlink()

    def owned(self) -> dict[str, str]:
        """slot -> owner, for reclaiming slots of capsules that no longer exist."""
        if not self.root.is_dir():
            return {}
        out = {}
        for p in self.root.iterdir():
            if p.name.startswith(_CLAIM):
                _drop_if_abandoned(p)
                continue
            with contextlib.suppress(OSError):
                out[p.name] = p.read_text()
        return out


def _routed_slots(table: Path) -> set[IPv4Network]:
    """The /30s holding a destination of the host's routes of /30 or narrower (a capsule veth's
    is its slot). Wider routes are the host's own networks, not a slot's: ignored."""
    slots = set()
    with contextlib.suppress(OSError):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 8:
                continue
            with contextlib.suppress(ValueError):  # addresses in hex, the host's byte order
                dest = int.from_bytes(bytes.fromhex(fields[1]), "little")
                mask = int.from_bytes(bytes.fromhex(fields[7]), "little")
                if mask.bit_count() >= 30:
                    slots.add(IPv4Network((dest & ~0b11 & 0xFFFFFFFF, 30)))
    return slots


def _drop_if_abandoned(claim: Path) -> None:
    """Remove a claim file whose process is gone (killed between writing and removing it)."""
    pid = claim.name.removeprefix(_CLAIM).split("-", 1)[0]
    if pid.isdigit() and not Path(f"/proc/{pid}").exists():
        claim.unlink(missing_ok=True)


async def setup(capsule_key: str, slot: IPv4Network) -> CapsuleNet:
    netns, veth = names_for(capsule_key)
    host_ip, capsule_ip = slot.network_address + 1, slot.network_address + 2
    net = CapsuleNet(netns=netns, veth=veth, host_ip=host_ip, capsule_ip=capsule_ip)
    host_cmds = (
        f"netns add {netns}\n"
        f"link add {veth} type veth peer name eth0 netns {netns}\n"
        f"addr add {host_ip}/30 dev {veth}\n"
        f"link set {veth} up\n"
    )
    await run("ip", "-batch", "-", input=host_cmds.encode())
    harden_veth(veth)
    await configure_inside(net)
    return net


def harden_veth(veth: str) -> None:
    """Kernel settings of the host end of a capsule's veth."""
    conf = Path("/proc/sys/net/ipv4/conf") / veth
    # Strict reverse-path filtering: a capsule cannot spoof another capsule's source address.
    (conf / "rp_filter").write_text("1\n")
    # A capsule cannot steer the host's routes, nor learn the host's other addresses by ARP.
    (conf / "accept_redirects").write_text("0\n")
    (conf / "arp_ignore").write_text("1\n")
    # Capsules have no IPv6: no link-local address for them to talk to either.
    v6 = Path("/proc/sys/net/ipv6/conf") / veth / "disable_ipv6"
    if v6.exists():
        v6.write_text("1\n")


async def configure_inside(net: CapsuleNet) -> None:
    """(Re)apply the capsule-side addresses: runsc removes them when it takes over the interface,
    so this runs before every `runsc run` and `runsc restore`."""
    cmds = (
        f"addr replace {net.capsule_ip}/30 dev eth0\n"
        "link set lo up\n"
        "link set eth0 up\n"
        f"route replace default via {net.host_ip}\n"
    )
    await run("ip", "-n", net.netns, "-batch", "-", input=cmds.encode())


async def teardown(netns: str, veth: str) -> None:
    """Remove the veth pair (both ends) and the namespace. Idempotent."""
    # Deleting the host end takes the peer with it at once; netns deletion alone frees it lazily.
    if Path(f"/sys/class/net/{veth}").exists():
        await run_quiet("ip", "link", "del", veth, timeout=15)
    if Path(f"/run/netns/{netns}").exists():
        await run_quiet("ip", "netns", "del", netns, timeout=15)


async def list_netns() -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith(NETNS_PREFIX)]
