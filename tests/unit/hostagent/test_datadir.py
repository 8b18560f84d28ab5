"""A data dir left by an older version (0755 directories, 0644 files) is made root's alone when
the agent starts, without touching the modes inside root filesystems (the running agent's data
dir, tried as another user: tests/integration/test_host_safety.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from wrenn_server.hostagent import datadir
from wrenn_server.hostagent.config import AgentSettings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentSettings]:
    old = os.umask(0o022)
    s = AgentSettings(data_dir=tmp_path / "data")
    # The run dir lives under /run/wrenn; keep it inside the test's own directory.
    monkeypatch.setattr(AgentSettings, "run_dir", property(lambda _self: tmp_path / "run" / "k"))
    yield s
    os.umask(old)


def test_an_old_data_dir_is_tightened(settings: AgentSettings) -> None:
    data = settings.data_dir
    image = data / "templates/img"
    snap = data / "templates/snap"
    capsule = data / "capsules" / "sb-00000000-0000-4000-8000-000000000000"
    for d in (image / "rootfs/etc", snap / "checkpoint", capsule / "checkpoint", data / "logs"):
        d.mkdir(parents=True, mode=0o755)
    files = [
        image / "template.json",
        snap / "template.json",
        snap / "disk.img",
        snap / "checkpoint/checkpoint.img",
        capsule / "meta.json",
        capsule / "config.json",
        capsule / "disk.img",
        capsule / "runsc.log",
        capsule / "checkpoint/pages.img",
        data / "wrenn.db",
        data / "agent-secret",
        data / "logs" / "agent.log",
    ]
    for f in files:
        f.write_text("x")
        f.chmod(0o644)
    inside = image / "rootfs/etc/passwd"
    inside.write_text("root:x:0:0::/root:/bin/sh\n")
    inside.chmod(0o644)
    suid = image / "rootfs/x"
    suid.write_text("")
    suid.chmod(0o4755)
    data.chmod(0o755)

    datadir.secure(settings)

    dirs = [data, data / "templates", data / "capsules", image, snap, capsule, data / "logs"]
    dirs += [snap / "checkpoint", capsule / "checkpoint", settings.run_dir]
    assert {str(d): mode(d) for d in dirs} == {str(d): 0o700 for d in dirs}
    top = [f for f in files if f.parent in (data, image, snap, capsule) or "checkpoint" in str(f)]
    assert {str(f): mode(f) for f in top} == {str(f): 0o600 for f in top}
    # A root filesystem keeps its own modes: the 0700 directory above it is what shuts it away.
    assert mode(inside) == 0o644 and mode(suid) == 0o4755
    assert mode(image / "rootfs") == 0o755


def test_a_fresh_data_dir_is_private_from_the_start(settings: AgentSettings) -> None:
    datadir.secure(settings)
    for d in (settings.data_dir, settings.templates_dir, settings.capsules_dir, settings.run_dir):
        assert mode(d) == 0o700
