"""What a capsule leaves on the host, so tests can prove destroy and recovery leave nothing."""

from __future__ import annotations

import os
from pathlib import Path

from wrenn_server.hostagent.capsule import capsule_key

from .conftest import DATA_DIR


def traces_of(sandbox_id: str) -> list[str]:
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
    if ipam.is_dir() and any(sandbox_id in (ipam / p).read_text() for p in os.listdir(ipam)):
        found.append("address slot")
    return found


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    needle = text.encode()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if needle in f.read():
                        pids.append(int(pid))
            except OSError:
                continue
    return pids
