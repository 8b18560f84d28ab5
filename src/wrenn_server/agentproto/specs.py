"""A host's specs as it registers them (and as the control plane records its own local host):
what the scheduler weighs hosts by."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import TypedDict


class HostSpecs(TypedDict):
    """The fields of a host's registration body (and of its row) that describe the machine."""

    arch: str
    cpu_cores: int
    memory_mb: int
    disk_gb: int


def host_specs(data_dir: Path) -> HostSpecs:
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    return {
        "arch": platform.machine(),
        "cpu_cores": os.cpu_count() or 1,
        "memory_mb": memory_mb,
        "disk_gb": shutil.disk_usage(data_dir).total // (1 << 30),
    }
