"""How the agent reads the memory the host has left (its guard against booting capsules into an
out-of-memory host is tested end to end in tests/integration/test_multihost.py)."""

from __future__ import annotations

from pathlib import Path

from wrenn_server.hostagent.capacity import available_memory_mb


def test_reads_mem_available(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       24555436 kB\nMemFree:         1048576 kB\nMemAvailable:    2097152 kB\n"
    )
    assert available_memory_mb(str(meminfo)) == 2048


def test_unknown_without_the_line_or_the_file(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24555436 kB\n")
    assert available_memory_mb(str(meminfo)) is None
    assert available_memory_mb(str(tmp_path / "missing")) is None


def test_this_machine_has_some() -> None:
    available = available_memory_mb()
    assert available is not None and available > 0
