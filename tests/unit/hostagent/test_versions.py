"""The versions a capsule reports: runsc's read from its output, envd's checked before use."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from wrenn_server.hostagent.envd_client import _reported_version
from wrenn_server.hostagent.versions import clean, host_versions, runsc_version


def _script(tmp_path: Path, body: str, name: str = "runsc") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_runsc_version_read_from_its_output(tmp_path: Path) -> None:
    fake = _script(tmp_path, 'echo "runsc version release-20240212.0"; echo "spec: 1.1.0"')
    assert await runsc_version(fake) == "release-20240212.0"
    debian = _script(tmp_path, 'echo "runsc version 0.0~20240729.0"; echo "spec: 1.0.2-dev"', "deb")
    assert await runsc_version(debian) == "0.0~20240729.0"
    found = await host_versions(fake)
    assert found["vmm_version"] == "release-20240212.0"
    assert found["agent_version"]  # the installed package's


async def test_runsc_that_fails_or_is_missing_gives_no_version(tmp_path: Path) -> None:
    assert await runsc_version(_script(tmp_path, "exit 3")) == ""
    assert await runsc_version(os.path.join(tmp_path, "absent")) == ""
    assert "vmm_version" not in await host_versions(_script(tmp_path, "echo nonsense"))


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
