"""What a capsule leaves on the host, so tests can prove destroy and recovery leave nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from wrenn_server.hostagent.capsule import capsule_key
from wrenn_server.hostagent.proc import command_lines

from .conftest import DATA_DIR


def capsule_dir(sandbox_id: str) -> Path:
    """The capsule's directory: named by its handle, which differs from its id when the warm
    pool booted it."""
    for meta_path in (DATA_DIR / "capsules").glob("*/meta.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("sandbox_id") == sandbox_id:
            return meta_path.parent
    return DATA_DIR / "capsules" / sandbox_id


def traces_of(sandbox_id: str) -> list[str]:
    """What is left of a capsule on the host, by its id or (for a live capsule handed over by
    the warm pool) by the handle its host resources are named after."""
    handle = capsule_dir(sandbox_id).name
    if handle != sandbox_id:
        return sorted(set(_traces(handle)) | set(_traces(sandbox_id)))
    return _traces(sandbox_id)


def _traces(sandbox_id: str) -> list[str]:
    key = capsule_key(sandbox_id)
    found = []
    if Path(f"/run/netns/wrn-{key}").exists():
        found.append("netns")
    if Path(f"/sys/class/net/wv{key}").exists():
        found.append("veth")
    if (DATA_DIR / "capsules" / sandbox_id).exists():
        found.append("directory")
    with open("/proc/self/mountinfo") as f:
        if any(sandbox_id in line for line in f):
            found.append("mount")
    for controller in ("memory", "pids", "cpu"):
        if Path(f"/sys/fs/cgroup/{controller}/wrenn/{sandbox_id}").exists():
            found.append(f"cgroup:{controller}")
    if _processes_mentioning(sandbox_id):
        found.append("process")
    ipam = Path("/run/wrenn/ipam")
    if ipam.is_dir() and any(sandbox_id in _owner(ipam / p) for p in os.listdir(ipam)):
        found.append("address slot")
    return found


def _owner(slot: Path) -> str:
    """A slot's owner; "" if another agent on the host released it since it was listed."""
    try:
        return slot.read_text()
    except FileNotFoundError:
        return ""


def _processes_mentioning(text: str) -> list[int]:
    needle = text.encode()
    return [pid for pid, argv in command_lines() if needle in b"\0".join(argv)]
