"""The stamp control plane processes share: a bump through one mapping is read through another;
the file is private and a planted link is refused, not followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from wrenn_server.controlplane.services.write_stamp import WriteStamp


def test_a_bump_through_one_mapping_is_read_through_another(tmp_path: Path) -> None:
    one, other = WriteStamp(tmp_path / "stamp"), WriteStamp(tmp_path / "stamp")
    seen = {other.read()}
    for _ in range(50):
        one.bump()
        assert other.read() not in seen  # never a value a reader may have kept
        seen.add(other.read())
    assert one.read() == other.read()
    one.close()
    other.close()


def test_the_file_is_private(tmp_path: Path) -> None:
    WriteStamp(tmp_path / "stamp").close()
    assert stat.S_IMODE((tmp_path / "stamp").stat().st_mode) == 0o600


def test_a_planted_link_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep me")
    os.symlink(target, tmp_path / "stamp")
    with pytest.raises(OSError):
        WriteStamp(tmp_path / "stamp")
    assert target.read_bytes() == b"keep me"
