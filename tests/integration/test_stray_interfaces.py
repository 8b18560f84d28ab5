"""An interface left in the capsule subnet that no address slot file claims (a crashed agent's
whose /run was wiped, or one configured by hand) must not take a new capsule's traffic: the
agent skips the slots the host already routes, and the capsule it boots answers. Capsule
namespaces and cgroups nobody claims are removed when an agent starts."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent import cgroups
from wrenn_server.hostagent.capsule import CGROUP_PARENT, capsule_key
from wrenn_server.hostagent.network import IPAM_DIR

from .conftest import AgentProcess, CapsuleFactory, run_as_root

pytestmark = pytest.mark.integration

# Not the warm pool's shape: each create allocates its slot then and there.
BOOTED = {"memory_mb": 256}
STRAYS = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def leave() -> Iterator[Callable[[IPv4Network], None]]:
    """`leave(slot)` puts a capsule-like veth pair on `slot` with no slot file: the host end up
    with the slot's host address, the other end in a namespace of its own with the capsule's.
    Removed after the test."""
    made: list[tuple[str, str]] = []

    def put(slot: IPv4Network) -> None:
        tag = uuid.uuid4().hex[:10]
        veth, netns = f"wv{tag}", f"wrntest-{tag}"
        made.append((veth, netns))
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("addr", "add", f"{slot[1]}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", netns, "addr", "add", f"{slot[2]}/30", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")

    yield put
    for veth, netns in made:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


async def _slot_of(agent: AgentClient, sandbox_id: str) -> IPv4Network:
    out = await run_as_root(agent, sandbox_id, "ip -4 -o addr show dev eth0")
    assert out.exit_code == 0, out.stderr
    return IPv4Interface(out.stdout.decode().split()[3]).network


async def test_a_slot_an_interface_already_holds_is_skipped(
    agent: AgentClient, new_capsule: CapsuleFactory, leave: Callable[[IPv4Network], None]
) -> None:
    first = await new_capsule(**BOOTED)
    slot = await _slot_of(agent, first.sandbox_id)
    # The slots the agent hands out next (in turn after the last one given), as it would if a
    # crashed agent's capsules still held them without their slot files.
    taken = {p.name for p in IPAM_DIR.iterdir()}
    strays: list[IPv4Network] = []
    nxt = slot
    while len(strays) < STRAYS:
        nxt = IPv4Network(f"{nxt.broadcast_address + 1}/30")
        if str(nxt.network_address) not in taken:
            strays.append(nxt)
            leave(nxt)
    second = await new_capsule(**BOOTED)
    assert await _slot_of(agent, second.sandbox_id) not in strays
    done = await run_as_root(agent, second.sandbox_id, "echo reached")
    assert done.stdout == b"reached\n"


def _ip_gone(*args: str) -> None:
    """An `ip ... del` of what may be gone already."""
    subprocess.run(["ip", *args], capture_output=True)


def _netns_exists(name: str) -> bool:
    return (Path("/run/netns") / name).exists()


async def test_capsule_namespaces_and_cgroups_no_agent_claims_are_removed_at_start(
    agent: AgentClient, agent_process: AgentProcess, new_capsule: CapsuleFactory
) -> None:
    """A `wrn-` namespace with its veth, and empty capsule cgroups, that no address slot names
    (their agent's /run wiped, or an older agent's leftovers) go when an agent starts; those
    another agent of the host holds a slot for stay, as do the agent's own capsules."""
    live = await new_capsule()
    stray_handle = f"sb-{uuid.uuid4()}"
    stray = capsule_key(stray_handle)
    _ip("netns", "add", f"wrn-{stray}")
    _ip(
        "link", "add", f"wv{stray}", "type", "veth", "peer", "name", "eth0", "netns", f"wrn-{stray}"
    )
    # Another agent's capsule: a slot outside this agent's subnet names it as its owner.
    other_handle = f"sb-{uuid.uuid4()}"
    other = capsule_key(other_handle)
    slot_file = IPAM_DIR / "10.203.255.252"
    assert not slot_file.exists()
    slot_file.write_text(f"/var/lib/another-agent:{other_handle}")
    _ip("netns", "add", f"wrn-{other}")
    parents = cgroups.existing(CGROUP_PARENT)
    assert parents  # the live capsule's agent made them
    for parent in parents:
        (parent / stray_handle).mkdir()
        (parent / other_handle).mkdir()
    try:
        agent_process.kill9()
        agent_process.start()
        assert not _netns_exists(f"wrn-{stray}")
        assert not (Path("/sys/class/net") / f"wv{stray}").exists()
        assert cgroups.existing(f"{CGROUP_PARENT}/{stray_handle}") == []
        assert _netns_exists(f"wrn-{other}")
        assert len(cgroups.existing(f"{CGROUP_PARENT}/{other_handle}")) == len(parents)
        res = await run_as_root(agent, live.sandbox_id, "echo still")
        assert res.stdout == b"still\n"
    finally:
        slot_file.unlink(missing_ok=True)
        for key in (stray, other):
            _ip_gone("link", "del", f"wv{key}")
            _ip_gone("netns", "del", f"wrn-{key}")
        for handle in (stray_handle, other_handle):
            for path in cgroups.existing(f"{CGROUP_PARENT}/{handle}"):
                path.rmdir()
