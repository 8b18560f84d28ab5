"""A host's specs as it registers them (and as the control plane records its own local host):
what the scheduler weighs hosts by."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any


def host_specs(data_dir: Path) -> dict[str, Any]:
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    return {
        "arch": platform.machine(),
        "cpu_cores": os.cpu_count() or 1,
        "memory_mb": memory_mb,
        "disk_gb": shutil.disk_usage(data_dir).total // (1 << 30),
    }
