"""Capsule address slots (network.Ipam): /30s of the capsule subnet handed out host-wide through
files created with O_EXCL, so agents sharing a host never hand out the same slot. Each test uses
its own slot directory; nothing here needs root."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import grpc
import pytest

from wrenn_server.hostagent import errors
from wrenn_server.hostagent.network import Ipam
from wrenn_server.hostagent.rpc_guard import status_for

SUBNET = IPv4Network("10.99.0.0/28")  # four /30 slots
SLOTS = [IPv4Network(f"10.99.0.{n}/30") for n in (0, 4, 8, 12)]


def test_hands_out_every_slot_once_then_refuses(tmp_path: Path) -> None:
    ipam = Ipam(SUBNET, root=tmp_path)
    got = [ipam.allocate(f"owner-{i}") for i in range(4)]
    assert sorted(got) == SLOTS
    with pytest.raises(errors.ResourceExhausted) as exc:
        ipam.allocate("one-too-many")
    # The caller is told what ran out (RESOURCE_EXHAUSTED), not an internal error.
    assert status_for(exc.value) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "the host has no free capsule network address",
    )
    assert ipam.owned() == {str(s.network_address): f"owner-{i}" for i, s in enumerate(got)}


def test_a_released_slot_is_handed_out_again(tmp_path: Path) -> None:
    ipam = Ipam(SUBNET, root=tmp_path)
    got = [ipam.allocate(f"owner-{i}") for i in range(4)]
    # Released by its capsule address, as the runtime does (any address of the /30 names it).
    ipam.release(got[2].network_address + 2, "owner-2")
    assert ipam.allocate("new-owner") == got[2]
    assert ipam.owned()[str(got[2].network_address)] == "new-owner"


def test_slots_go_round_before_one_is_reused(tmp_path: Path) -> None:
    """Slots are handed out in turn after the last one given: a slot just freed is the last
    to come round again."""
    ipam = Ipam(SUBNET, root=tmp_path)
    first = ipam.allocate("a")
    ipam.release(first, "a")
    assert [ipam.allocate(o) for o in "bcd"] == SLOTS[1:]
    assert ipam.allocate("e") == first


def test_only_the_owner_releases_a_slot(tmp_path: Path) -> None:
    ipam = Ipam(SUBNET, root=tmp_path)
    slot = ipam.allocate("/data/a:sb-1")
    ipam.release(slot, "/data/b:sb-1")  # another agent's capsule of the same id
    assert ipam.owned() == {str(slot.network_address): "/data/a:sb-1"}
    ipam.release(slot, "/data/a:sb-1")
    assert ipam.owned() == {}
    ipam.release(slot, "/data/a:sb-1")  # twice: nothing to do, no error


def test_agents_sharing_the_directory_never_collide(tmp_path: Path) -> None:
    one, other = Ipam(SUBNET, root=tmp_path), Ipam(SUBNET, root=tmp_path)
    got = [one.allocate("one:a"), other.allocate("other:a"), one.allocate("one:b")]
    got.append(other.allocate("other:b"))
    assert sorted(got) == SLOTS
    with pytest.raises(errors.ResourceExhausted):
        one.allocate("one:c")


def test_slot_addresses(tmp_path: Path) -> None:
    """A /30's network and broadcast addresses are never a host or capsule address."""
    slot = Ipam(IPv4Network("10.11.0.0/24"), root=tmp_path).allocate("x")
    assert slot.prefixlen == 30
    assert (slot[1], slot[2]) == (IPv4Address("10.11.0.1"), IPv4Address("10.11.0.2"))


def test_no_directory_yet_owns_nothing(tmp_path: Path) -> None:
    assert Ipam(SUBNET, root=tmp_path / "missing").owned() == {}


def test_a_slot_appears_with_its_owner_and_no_claim_file_stays(tmp_path: Path) -> None:
    """A slot's file is linked from a finished claim file, so it never exists empty (an agent
    killed between creating a slot and writing its owner used to leave a slot nobody reclaims),
    and the claim file goes once the slot is taken or none is free."""
    ipam = Ipam(SUBNET, root=tmp_path)
    seen: list[str] = []
    real_link = os.link

    def link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(Path(src).read_text())  # the owner is in the file before the slot exists
        real_link(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "link", link)
        for i in range(4):
            ipam.allocate(f"owner-{i}")
        with pytest.raises(errors.ResourceExhausted):
            ipam.allocate("one-too-many")
    assert seen[:4] == [f"owner-{i}" for i in range(4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        str(s.network_address) for s in SLOTS
    )


def test_a_claim_left_by_a_killed_agent_is_not_a_slot_and_is_removed(tmp_path: Path) -> None:
    ipam = Ipam(SUBNET, root=tmp_path)
    ipam.allocate("owner-a")
    gone = tmp_path / ".claim-999999999-0a0b0c0d"  # no such process
    gone.write_text("owner-killed")
    alive = tmp_path / f".claim-{os.getpid()}-01020304"  # a claim under way
    alive.write_text("owner-busy")
    assert ipam.owned() == {"10.99.0.0": "owner-a"}
    assert not gone.exists()
    assert alive.exists()


def _route(iface: str, dest: str, mask: str) -> str:
    """A /proc/net/route line: addresses in hex, in the host's (little-endian) byte order."""

    def hexed(address: str) -> str:
        return IPv4Address(address).packed[::-1].hex().upper()

    return f"{iface}\t{hexed(dest)}\t00000000\t0001\t0\t0\t0\t{hexed(mask)}\t0\t0\t0"


def test_a_slot_the_host_already_routes_is_not_handed_out(tmp_path: Path) -> None:
    """An interface left in the capsule subnet by a crashed agent whose slot files are gone
    (or put there by hand) would take a new capsule's traffic: its slot is skipped. A wider
    route over the whole subnet (the host's own network) does not take any slot."""
    table = tmp_path / "route"
    header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT"
    table.write_text(
        "\n".join(
            [
                header,
                _route("eth0", "0.0.0.0", "0.0.0.0"),
                _route("eth1", "10.99.0.0", "255.255.0.0"),
                _route("wvleaked", "10.99.0.4", "255.255.255.252"),
                _route("tun0", "10.99.0.13", "255.255.255.255"),
            ]
        )
        + "\n"
    )
    ipam = Ipam(SUBNET, root=tmp_path / "slots", routes=table)
    assert [ipam.allocate("a"), ipam.allocate("b")] == [SLOTS[0], SLOTS[2]]
    with pytest.raises(errors.ResourceExhausted):
        ipam.allocate("c")
    table.write_text(header + "\n")  # the interfaces removed: their slots are free again
    assert sorted([ipam.allocate("c"), ipam.allocate("d")]) == [SLOTS[1], SLOTS[3]]


def test_no_route_table_hides_no_slot(tmp_path: Path) -> None:
    ipam = Ipam(SUBNET, root=tmp_path / "slots", routes=tmp_path / "missing")
    assert sorted(ipam.allocate(o) for o in "abcd") == SLOTS
