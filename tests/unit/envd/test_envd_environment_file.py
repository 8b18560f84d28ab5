"""envd keeps the capsule's default environment in a root-only file for services started
before /init (the code interpreter's kernels): replaced whole each time, never readable by
others, and a failure to write it does not fail /init."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from wrenn_server.envd import environment_file


def test_the_file_holds_the_environment_for_root_alone(tmp_path: Path) -> None:
    path = tmp_path / "run" / "wrenn" / "environment.json"
    environment_file.write({"A": "1", "QUOTE": 'it\'s "x"'}, str(path))
    assert json.loads(path.read_text()) == {"A": "1", "QUOTE": 'it\'s "x"'}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    first = path.stat().st_ino
    environment_file.write({"B": "2"}, str(path))
    assert json.loads(path.read_text()) == {"B": "2"}
    assert path.stat().st_ino != first  # a new file swapped in: readers never see half of one
    assert [p.name for p in path.parent.iterdir()] == ["environment.json"]


def test_a_failed_write_is_reported_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    environment_file.write({"A": "1"}, str(blocker / "environment.json"))
    assert "could not write" in capsys.readouterr().err
    assert blocker.read_text() == "not a directory"
