"""A base template built by an older recipe (base_upgrade.py): rebuilt and swapped in when
nothing uses it; kept, with a warning naming its users and the exact command, when a capsule
(running or paused) or a snapshot template mounts it; `wrenn image build --force` refuses to
remove it under them. The build itself (debootstrap) is replaced by writing a marker tree: the
decisions and the swap are what is under test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wrenn_server import cli
from wrenn_server.hostagent import base_image, base_upgrade
from wrenn_server.hostagent.templates import TemplateStore

NEW = base_image.ImageRecipe(
    packages=(), finish=lambda rootfs: None, default_user="wrenn-user", version=2
)


@pytest.fixture(autouse=True)
def fake_debootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    async def build(target: Path, progress: object, packages: object = ()) -> None:
        (target / "home/wrenn-user").mkdir(parents=True)
        (target / "marker").write_text("new")

    monkeypatch.setattr(base_image, "debootstrap", build)


def _old_base(data_dir: Path, meta: dict[str, object] | None = None) -> Path:
    """A base template as a version before the default user wrote it."""
    d = data_dir / "templates/minimal"
    (d / "rootfs").mkdir(parents=True)
    (d / "rootfs/marker").write_text("old")
    data = {"name": "minimal", "type": "image", "created_at": 1.0, "size_bytes": 0, "base": None}
    (d / "template.json").write_text(json.dumps(meta or data))
    return d


def _capsule_on(data_dir: Path, handle: str, base: str = "minimal", status: str = "paused") -> None:
    d = data_dir / "capsules" / handle
    d.mkdir(parents=True)
    record = {"sandbox_id": handle, "base_image": base, "status": status}
    (d / "meta.json").write_text(json.dumps(record))


def _noop(fraction: float, step: str) -> None:
    pass


def test_template_json_from_before_versions_is_read_by_what_it_holds(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    _old_base(tmp_path)
    assert store.get("minimal").recipe_version == 1
    assert store.stale("minimal", NEW)
    old = json.loads((tmp_path / "templates/minimal/template.json").read_text())
    old["default_user"] = "wrenn-user"
    (tmp_path / "templates/minimal/template.json").write_text(json.dumps(old))
    assert store.get("minimal").recipe_version == 2
    assert not store.stale("minimal", NEW)
    assert not store.stale("absent", NEW)


async def test_a_stale_unused_base_is_rebuilt_and_swapped_in(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    _old_base(tmp_path)
    _capsule_on(tmp_path, "sb-other", base="code-runner-beta")
    # Torn down by the agent's start anyway: a warm pool's capsule, a half-made one.
    _capsule_on(tmp_path, "sb-pooled", status="pooled")
    _capsule_on(tmp_path, "sb-starting", status="starting")
    check = await base_upgrade.ensure_current(store, tmp_path / "capsules", "minimal", _noop, NEW)
    assert check.rebuilt and not check.warning
    assert (tmp_path / "templates/minimal/rootfs/marker").read_text() == "new"
    assert store.get("minimal").recipe_version == 2 and not store.stale("minimal", NEW)
    # Nothing half-done left: no staging or trash tree.
    assert os.listdir(tmp_path / "templates") == ["minimal"]
    # A current one is left alone.
    again = await base_upgrade.ensure_current(store, tmp_path / "capsules", "minimal", _noop, NEW)
    assert again == base_upgrade.BaseCheck()


async def test_a_stale_base_in_use_is_kept_with_the_command_to_run(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    d = _old_base(tmp_path)
    inode = (d / "rootfs").stat().st_ino
    _capsule_on(tmp_path, "sb-paused")
    _capsule_on(tmp_path, "sb-pooled", status="pooled")
    (tmp_path / "templates/snap").mkdir()
    (tmp_path / "templates/snap/template.json").write_text(
        json.dumps({"name": "snap", "type": "snapshot", "created_at": 1.0, "base": "minimal"})
    )
    check = await base_upgrade.ensure_current(store, tmp_path / "capsules", "minimal", _noop, NEW)
    assert not check.rebuilt
    assert check.stale_users == ("capsule sb-paused", "snapshot template snap")
    assert "wrenn image build minimal --force --data-dir " + str(tmp_path) in check.warning
    assert "capsule sb-paused" in check.warning and "recipe 1" in check.warning
    # The very tree the capsule's overlay lower points at.
    assert (d / "rootfs").stat().st_ino == inode
    assert (d / "rootfs/marker").read_text() == "old"


async def test_a_missing_base_is_built(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "templates")
    check = await base_upgrade.ensure_current(store, tmp_path / "capsules", "minimal", _noop, NEW)
    assert check == base_upgrade.BaseCheck()
    assert store.get("minimal").recipe_version == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="wrenn image build runs as root only")
def test_image_build_force_refuses_a_base_in_use(tmp_path: Path) -> None:
    d = _old_base(tmp_path)
    _capsule_on(tmp_path, "sb-paused")
    result = CliRunner().invoke(
        cli.app, ["image", "build", "minimal", "--force", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1, result.output
    assert "in use by capsule sb-paused" in result.output
    assert (d / "rootfs/marker").read_text() == "old"
