"""The host agent's envd master key (envd_keys.py) and template metadata without tokens."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from wrenn_server.hostagent.envd_keys import KEY_BYTES, EnvdKeys, token_for
from wrenn_server.hostagent.errors import StartupError
from wrenn_server.hostagent.templates import SNAPSHOT, Template, TemplateStore


def test_a_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "envd.key"
    keys = EnvdKeys(path)
    token = keys.token_for("sb-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == KEY_BYTES
    assert [p.name for p in path.parent.iterdir()] == ["envd.key"]  # no temporary left
    # Another agent process on the same data dir derives the same tokens.
    again = EnvdKeys(path)
    assert again.token_for("sb-1") == token
    assert again.token_for("sb-2") != token


def test_tokens_are_hmac_of_the_handle(tmp_path: Path) -> None:
    key = bytes(range(KEY_BYTES))
    token = token_for(key, "sb-x")
    assert token == token_for(key, "sb-x")
    assert token != token_for(bytes(KEY_BYTES), "sb-x")
    assert len(token) == 43 and "=" not in token  # 32 bytes, base64url without padding
    assert all(0x21 <= ord(c) <= 0x7E for c in token)  # what envd accepts


def test_a_key_readable_by_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "envd.key"
    path.write_bytes(os.urandom(KEY_BYTES))
    path.chmod(0o644)
    EnvdKeys(path).key()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", [b"", b"short", os.urandom(KEY_BYTES + 1)])
def test_a_damaged_key_stops_the_agent_rather_than_being_replaced(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "envd.key"
    path.write_bytes(content)
    with pytest.raises(StartupError, match="damaged"):
        EnvdKeys(path).key()
    assert path.read_bytes() == content


def test_a_link_in_place_of_the_key_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(os.urandom(KEY_BYTES))
    (tmp_path / "envd.key").symlink_to(elsewhere)
    with pytest.raises(StartupError):
        EnvdKeys(tmp_path / "envd.key").key()


def test_snapshot_templates_store_their_source_not_a_token(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    staging = store.staging("snap")
    template = Template(
        name="snap", type=SNAPSHOT, created_at=time.time(), base="minimal", source_capsule="sb-a"
    )
    store.commit(staging, template, overwrite=False)
    stored = json.loads((tmp_path / "templates/snap/template.json").read_text())
    assert stored["source_capsule"] == "sb-a" and "envd_token" not in stored
    assert store.get("snap").source_capsule == "sb-a"
    assert store.legacy_envd_token("snap") is None


def test_templates_written_before_derived_tokens_are_still_read(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    for name, token in (("old-snap", "the-old-token-of-that-snapshot"), ("old-image", None)):
        (tmp_path / "templates" / name).mkdir(parents=True)
        old = {"name": name, "type": SNAPSHOT if token else "image", "created_at": 1.0,
               "size_bytes": 5, "base": "minimal" if token else None, "envd_token": token,
               "vcpus": 0, "memory_mb": 0, "disk_size_mb": 0}  # fmt: skip
        (tmp_path / "templates" / name / "template.json").write_text(json.dumps(old))
    snap = store.get("old-snap")
    assert snap.source_capsule is None and snap.size_bytes == 5
    assert store.legacy_envd_token("old-snap") == "the-old-token-of-that-snapshot"
    assert store.legacy_envd_token("old-image") is None
    assert [t.name for t in store.all()] == ["old-image", "old-snap"]
