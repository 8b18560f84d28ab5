"""A capsule record for the host agent's unit tests: the smallest shape, overridden where a
test cares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wrenn_server.hostagent.capsule import Capsule


def a_capsule(sandbox_id: str, directory: Path, **fields: Any) -> Capsule:
    defaults: dict[str, Any] = {
        "template": "minimal",
        "base_image": "minimal",
        "vcpus": 1,
        "memory_mb": 256,
        "disk_size_mb": 64,
        "timeout_sec": 300,
        "token": "t",
    }
    return Capsule(sandbox_id=sandbox_id, dir=directory, **{**defaults, **fields})
