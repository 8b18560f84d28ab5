"""What capsules of one agent (its data dir) hold on the host, found from the host's side, so a
test can prove that after destroys, crashes and restarts nothing is left that no capsule owns:
network namespaces and veth links, address slots, cgroups, nftables rules naming a capsule,
mounts and loop devices under the data dir, runsc's state and processes, capsule directories.

Everything is looked up by what names it (the capsule's handle, its 12-char key, the data dir,
the agent's runsc root), never by how the agent says it made it. Other agents sharing the host
(their own data dirs) are left out: their slots, mounts and processes name their data dir."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from wrenn_server.hostagent.capsule import capsule_key
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.network import IPAM_DIR, NETNS_PREFIX, VETH_PREFIX
from wrenn_server.hostagent.proc import command_lines

CGROUP_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "blkio", "freezer", "unified")


@dataclass(frozen=True)
class Leak:
    kind: str
    what: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.what}"


def pooled_handles(data_dir: Path) -> set[str]:
    """The warm pool's capsules, and those being made into a boot snapshot: the agent keeps
    them by design, with everything a running capsule holds."""
    handles = {d.name for d in (data_dir / "boot-snapshots" / "making").glob("sb-*")}
    for meta in (data_dir / "capsules").glob("*/meta.json"):
        try:
            if json.loads(meta.read_text()).get("status") == "pooled":
                handles.add(meta.parent.name)
        except (OSError, ValueError):
            continue
    return handles


def leaks(
    data_dir: Path, seen: AbstractSet[str] = frozenset(), keep: AbstractSet[str] | None = None
) -> list[Leak]:
    """What the data dir's agent left that belongs to no capsule in `keep` (default: its pooled
    ones). `seen` adds handles the test knows existed (a create killed before the agent wrote
    anything under its data dir still owns a netns, veth and cgroup by its handle)."""
    keep = pooled_handles(data_dir) if keep is None else keep
    settings = AgentSettings(data_dir=data_dir)
    runsc_root = settings.run_dir / "runsc"
    owners = _slot_owners(str(data_dir))
    handles = set(seen) | set(owners.values()) | _dirs(data_dir) | _runsc_ids(runsc_root)
    found: list[Leak] = []
    found += [Leak("capsule directory", h) for h in sorted(_dirs(data_dir) - keep)]
    found += [
        Leak("address slot", f"{s} ({h})") for s, h in sorted(owners.items()) if h not in keep
    ]
    found += [Leak("runsc state", h) for h in sorted(_runsc_ids(runsc_root) - keep)]
    found += [Leak("mount", m) for m in _mounts(data_dir / "capsules", keep)]
    found += [Leak("loop device", d) for d in _loops(data_dir / "capsules", keep)]
    found += [Leak("process", p) for p in _processes(str(runsc_root), keep)]
    ruleset = _nft_ruleset()
    for handle in sorted(handles - keep):
        key = capsule_key(handle)
        if Path(f"/run/netns/{NETNS_PREFIX}{key}").exists():
            found.append(Leak("netns", f"{NETNS_PREFIX}{key} ({handle})"))
        if Path(f"/sys/class/net/{VETH_PREFIX}{key}").exists():
            found.append(Leak("veth", f"{VETH_PREFIX}{key} ({handle})"))
        for controller in CGROUP_CONTROLLERS:
            if Path(f"/sys/fs/cgroup/{controller}/wrenn/{handle}").exists():
                found.append(Leak("cgroup", f"{controller}/wrenn/{handle}"))
        if key in ruleset or handle in ruleset:
            found.append(Leak("nftables rule", handle))
    return found


def _dirs(data_dir: Path) -> set[str]:
    root = data_dir / "capsules"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def _slot_owners(data_dir: str) -> dict[str, str]:
    """Address slot -> handle, of the slots this data dir's agent holds."""
    out = {}
    if IPAM_DIR.is_dir():
        for p in IPAM_DIR.iterdir():
            try:
                owner = p.read_text()
            except OSError:
                continue
            prefix, _, handle = owner.rpartition(":")
            if prefix == data_dir:
                out[p.name] = handle
    return out


def _runsc_ids(root: Path) -> set[str]:
    if not root.is_dir():
        return set()
    ran = subprocess.run(
        ["runsc", f"--root={root}", "list", "--quiet"], capture_output=True, text=True, timeout=30
    )
    return {line.strip() for line in ran.stdout.splitlines() if line.strip()}


def _owner(path: str, root: Path) -> str | None:
    """The capsule handle a path under the capsules dir belongs to."""
    prefix = f"{root}/"
    return path[len(prefix) :].split("/", 1)[0] if path.startswith(prefix) else None


def _mounts(root: Path, keep: AbstractSet[str]) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            handle = _owner(point, root)
            if handle is not None and handle not in keep:
                out.append(point)
    return out


def _loops(root: Path, keep: AbstractSet[str]) -> list[str]:
    ran = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = []
    for line in ran.stdout.splitlines():
        name, _, back = line.strip().partition(" ")
        handle = _owner(back.strip().removesuffix(" (deleted)"), root)
        if handle is not None and handle not in keep:
            out.append(f"{name} {back.strip()}")
    return out


def _processes(runsc_root: str, keep: AbstractSet[str]) -> list[str]:
    """runsc processes (sandbox, gofer, a stuck command) of this agent's runsc root that run
    for no kept capsule."""
    out = []
    needle = runsc_root.encode()
    for pid, argv in command_lines():
        if not any(needle in a for a in argv):
            continue
        text = " ".join(a.decode(errors="replace") for a in argv)
        if not any(h in text for h in keep):
            out.append(f"{pid} {text[:200]}")
    return out


def _nft_ruleset() -> str:
    ran = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=30)
    return ran.stdout
