"""The versions a capsule reports: runsc's read from its output, envd's checked before use."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from wrenn_server.hostagent.envd_client import _reported_version
from wrenn_server.hostagent.versions import clean


def _script(tmp_path: Path, body: str, name: str = "runsc") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _in_fresh_process(call: str, runsc: str) -> object:
    """`versions.<call>(runsc)` run in a process of its own: in this one, envd's unit tests
    leave a reaper thread that reaps every child, asyncio's included."""
    code = (
        "import asyncio, json, sys\n"
        "from wrenn_server.hostagent import versions\n"
        f"print(json.dumps(asyncio.run(versions.{call}(sys.argv[1]))))"
    )
    out = subprocess.run([sys.executable, "-c", code, runsc], capture_output=True, check=True)
    return json.loads(out.stdout)


def test_runsc_version_read_from_its_output(tmp_path: Path) -> None:
    fake = _script(tmp_path, 'echo "runsc version release-20240212.0"; echo "spec: 1.1.0"')
    assert _in_fresh_process("runsc_version", fake) == "release-20240212.0"
    debian = _script(tmp_path, 'echo "runsc version 0.0~20240729.0"; echo "spec: 1.0.2-dev"', "deb")
    assert _in_fresh_process("runsc_version", debian) == "0.0~20240729.0"
    found = _in_fresh_process("host_versions", fake)
    assert isinstance(found, dict) and found["vmm_version"] == "release-20240212.0"
    assert found["agent_version"]  # the installed package's


def test_runsc_that_fails_or_is_missing_gives_no_version(tmp_path: Path) -> None:
    assert _in_fresh_process("runsc_version", _script(tmp_path, "exit 3")) == ""
    assert _in_fresh_process("runsc_version", os.path.join(tmp_path, "absent")) == ""
    found = _in_fresh_process("host_versions", _script(tmp_path, "echo nonsense"))
    assert isinstance(found, dict) and "vmm_version" not in found


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("0.1.0", "0.1.0"),
        ("1.2.3+dev-4", "1.2.3+dev-4"),
        ("", ""),
        ("a b", ""),
        (3, ""),
        ("x" * 65, ""),
        ("-1", ""),
        ("0.1\n", ""),
    ],
)
def test_only_version_like_strings_are_kept(value: object, kept: str) -> None:
    assert clean(value) == kept


@pytest.mark.parametrize(
    ("body", "version"),
    [
        (b'{"status": "ok", "version": "0.1.0", "pid": 1}', "0.1.0"),
        (b'{"status": "ok"}', ""),
        (b"[1, 2]", ""),
        (b"not json", ""),
        (b'{"version": "<script>"}', ""),
        (b'{"version": "0.1.0", "pad": "' + b"x" * 5000 + b'"}', ""),
    ],
)
def test_envd_health_version(body: bytes, version: str) -> None:
    assert _reported_version(httpx.Response(200, content=body)) == version
