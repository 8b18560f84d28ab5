"""What a checkpoint is tied to: the runsc build that wrote it, the code of envd (running in its
memory) and of this agent (which wrote the capsule's bundle), and the settings baked into that
bundle. A checkpoint kept across agent restarts (a boot snapshot) is restored only under the
stamp it was made with: another runsc may not restore it, and an upgraded agent's new capsules
must not come back with the old envd."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from .. import envd
from .config import AgentSettings

# Settings a capsule's bundle or root filesystem holds from its boot on.
_BAKED_IN = {"envd_port", "pids_limit", "capsule_dns", "capsule_subnet"}


def checkpoint_stamp(settings: AgentSettings) -> str:
    digest = hashlib.sha256()
    runsc = shutil.which(settings.runsc) or settings.runsc
    try:
        st = os.stat(runsc)
        # A package upgrade replaces the binary: its size and time change (its version string
        # may not, for a build of the same release).
        digest.update(f"runsc {os.path.realpath(runsc)} {st.st_size} {st.st_mtime_ns}\n".encode())
    except OSError:
        digest.update(b"runsc missing\n")
    for package in (Path(envd.__file__).parent, Path(__file__).parent):
        for source in sorted(package.rglob("*.py")):
            digest.update(f"{source.relative_to(package.parent)}\n".encode())
            digest.update(source.read_bytes())
    digest.update(settings.model_dump_json(include=_BAKED_IN).encode())
    return digest.hexdigest()
