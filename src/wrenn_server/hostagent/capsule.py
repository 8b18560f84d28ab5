"""A capsule's record on the host: what it was created with and where its parts are.

Persisted as <data dir>/capsules/<id>/meta.json before any resource is made, so an agent that
restarts after a crash can find every trace of it (see GVisorRuntime.recover).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import errors
from .network import CapsuleNet

STARTING = "starting"
RUNNING = "running"
PAUSED = "paused"
# Booted ahead of demand, not handed to anyone yet (see pool.py).
POOLED = "pooled"
# Its sandbox died on its own (see sandbox_deaths.py); only destroy is left.
DEAD = "dead"

# An operation under way, kept in the record (`operation`) from before runsc's checkpoint
# starts until the capsule's status says how it ended: an agent restarted in between finishes
# or rolls it back instead of taking the capsule for leftovers (GVisorRuntime.recover).
PAUSING = "pausing"
SNAPSHOTTING = "snapshotting"


# `sb-` and a canonical (lowercase, hyphenated) UUID, matched whole: ids name directories,
# sandboxes and cgroups, so nothing else (`sb-/../..`, a trailing newline) may pass.
SANDBOX_ID_RE = re.compile(r"sb-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Every capsule's cgroup is <this>/<handle>, in each hierarchy (shared by the host's agents).
CGROUP_PARENT = "/wrenn"
RECORD = "meta.json"  # in the capsule's directory


def new_sandbox_id() -> str:
    return f"sb-{uuid.uuid4()}"


def validate_sandbox_id(sandbox_id: str) -> str:
    if not SANDBOX_ID_RE.fullmatch(sandbox_id):
        raise errors.InvalidArgument("sandbox_id must look like sb-{uuid}")
    return sandbox_id


def capsule_dir(capsules_dir: Path, handle: str) -> Path:
    return capsules_dir / validate_sandbox_id(handle)


def capsule_key(handle: str) -> str:
    """12 hex chars for kernel object names (netns, veth: 15 bytes max), unique per capsule."""
    raw = handle.removeprefix("sb-").replace("-", "")
    return raw[:12]


@dataclass
class Capsule:
    sandbox_id: str
    template: str
    base_image: str
    vcpus: int
    memory_mb: int
    disk_size_mb: int
    timeout_sec: int
    token: str
    dir: Path
    default_user: str = ""
    default_env: dict[str, str] = field(default_factory=dict)
    status: str = STARTING
    auto_paused: bool = False
    # Why a DEAD capsule's sandbox died.
    exit_reason: str = ""
    # The version its envd reported when it last started or resumed ("" if it did not say).
    envd_version: str = ""
    # PAUSING or SNAPSHOTTING while one is under way, else "".
    operation: str = ""
    created_at: float = field(default_factory=time.time)
    last_active_at: float = field(default_factory=time.time)
    net: CapsuleNet | None = None
    # Names the capsule's host resources (directory, sandbox, cgroup, netns). Equal to
    # sandbox_id unless the capsule was booted for the warm pool before it had an owner.
    handle: str = ""

    def __post_init__(self) -> None:
        self.handle = self.handle or self.sandbox_id
        validate_sandbox_id(self.sandbox_id)
        validate_sandbox_id(self.handle)

    @property
    def key(self) -> str:
        return capsule_key(self.handle)

    @property
    def shape(self) -> tuple[str, int, int, int]:
        return (self.template, self.vcpus, self.memory_mb, self.disk_size_mb)

    @property
    def runsc_id(self) -> str:
        return self.handle

    @property
    def cgroup(self) -> str:
        return f"{CGROUP_PARENT}/{self.handle}"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def disk_dir(self) -> Path:
        return self.dir / "disk"

    @property
    def disk_image(self) -> Path:
        return self.dir / "disk.img"

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoint"

    @property
    def log_path(self) -> Path:
        return self.dir / "runsc.log"

    def touch(self) -> None:
        self.last_active_at = time.time()

    def save(self) -> None:
        data: dict[str, Any] = asdict(self)
        data["dir"] = str(self.dir)
        data["net"] = self.net.to_dict() if self.net else None
        tmp = self.dir / f"{RECORD}.tmp"
        # The token opens the capsule's agent: readable by root only.
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        tmp.replace(self.dir / RECORD)

    def drop_record(self) -> None:
        """Gone from an agent's restart from here on, whatever is left of its files."""
        (self.dir / RECORD).unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: Path) -> Capsule:
        data = json.loads((directory / RECORD).read_text())
        data["dir"] = Path(data["dir"])
        data["net"] = CapsuleNet.from_dict(data["net"]) if data.get("net") else None
        return cls(**data)
