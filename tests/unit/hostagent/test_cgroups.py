"""Removing a capsule's cgroups once its sandbox is gone (hostagent/cgroups.py), on a directory
tree laid out like the host's cgroup file systems: every v1 hierarchy (one reached through a
link, as cpu -> cpu,cpuacct), a v2 root, child cgroups; a cgroup that still has a task (here: a
directory that is not empty) is retried until the wait ends and reported; others are untouched."""

from __future__ import annotations

import time
from pathlib import Path

from wrenn_server.hostagent import cgroups

CGROUP = "/wrenn/sb-1234"


def _layout(root: Path) -> list[Path]:
    (root / "cpu,cpuacct").mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    made = []
    for hierarchy in ("memory", "pids", "cpu,cpuacct", "freezer"):
        path = root / hierarchy / "wrenn" / "sb-1234"
        path.mkdir(parents=True)
        made.append(path)
        (root / hierarchy / "wrenn" / "sb-other").mkdir()
    (root / "memory" / "wrenn" / "sb-1234" / "child").mkdir()
    made.append(root / "wrenn" / "sb-1234")  # a v2 (unified) root
    made[-1].mkdir(parents=True)
    return made


async def test_every_hierarchy_and_child_is_removed_and_nothing_else(tmp_path: Path) -> None:
    made = _layout(tmp_path)
    assert set(cgroups.existing(CGROUP, tmp_path)) >= set(made)
    assert await cgroups.remove(CGROUP, 1.0, tmp_path) == []
    assert not any(path.exists() for path in made)
    assert cgroups.existing(CGROUP, tmp_path) == []
    for hierarchy in ("memory", "pids", "cpu,cpuacct", "freezer"):
        assert (tmp_path / hierarchy / "wrenn" / "sb-other").is_dir()


async def test_a_cgroup_still_in_use_is_retried_then_reported(tmp_path: Path) -> None:
    _layout(tmp_path)
    busy = tmp_path / "pids" / "wrenn" / "sb-1234"
    (busy / "tasks").write_text("42\n")  # rmdir fails, as on a cgroup with a task in it
    started = time.monotonic()
    assert await cgroups.remove(CGROUP, 0.2, tmp_path) == [busy]
    assert time.monotonic() - started >= 0.2
    assert cgroups.existing(CGROUP, tmp_path) == [busy]


async def test_no_cgroup_file_system_is_nothing_to_do(tmp_path: Path) -> None:
    assert await cgroups.remove(CGROUP, 1.0, tmp_path / "absent") == []
