"""Writes into a root filesystem that capsule code made never follow its links (the attacks end to
end, against real capsules: tests/integration/test_host_safety.py)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from wrenn_server.hostagent import rootfs_io


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    return root


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Stands for the host's own files, outside the tree."""
    d = tmp_path / "host"
    d.mkdir()
    (d / "file").write_text("precious\n")
    return d


def test_writes_a_new_file(tree: Path) -> None:
    rootfs_io.write_file(tree, "etc/resolv.conf", b"nameserver 192.0.2.1\n")
    target = tree / "etc/resolv.conf"
    assert target.read_bytes() == b"nameserver 192.0.2.1\n"
    assert stat.S_IMODE(target.lstat().st_mode) == 0o644


def test_replaces_an_existing_file_with_exactly_its_mode(tree: Path) -> None:
    old = tree / "etc/resolv.conf"
    old.write_text("old and longer content\n")
    old.chmod(0o4777)
    rootfs_io.write_file(tree, "/etc/resolv.conf", b"new\n", mode=0o600)
    assert old.read_bytes() == b"new\n"
    assert stat.S_IMODE(old.lstat().st_mode) == 0o600


def test_a_link_at_the_name_is_replaced_not_followed(tree: Path, host: Path) -> None:
    (tree / "etc/resolv.conf").symlink_to(host / "file")
    rootfs_io.write_file(tree, "etc/resolv.conf", b"")
    assert (host / "file").read_text() == "precious\n"
    assert not (tree / "etc/resolv.conf").is_symlink()
    assert (tree / "etc/resolv.conf").read_bytes() == b""


def test_a_dangling_link_at_the_name_creates_nothing_on_the_host(tree: Path, host: Path) -> None:
    (tree / "etc/resolv.conf").symlink_to(host / "created")
    rootfs_io.write_file(tree, "etc/resolv.conf", b"x")
    assert not (host / "created").exists()
    assert (tree / "etc/resolv.conf").read_bytes() == b"x"


def test_a_relative_link_climbing_out_is_not_followed(tree: Path, host: Path) -> None:
    (tree / "etc/hosts").symlink_to("../../host/file")
    rootfs_io.write_file(tree, "etc/hosts", b"x")
    assert (host / "file").read_text() == "precious\n"


def test_a_directory_at_the_name_is_replaced_without_following_links_in_it(
    tree: Path, host: Path
) -> None:
    d = tree / "etc/resolv.conf"
    d.mkdir()
    (d / "escape").symlink_to(host)
    rootfs_io.write_file(tree, "etc/resolv.conf", b"x")
    assert d.read_bytes() == b"x"
    assert (host / "file").read_text() == "precious\n"


@pytest.mark.parametrize("rel", ["etc/resolv.conf", "a/b/c/file"])
def test_a_link_at_any_parent_component_is_refused(tmp_path: Path, host: Path, rel: str) -> None:
    parents = rel.split("/")[:-1]
    for depth in range(len(parents)):
        root = tmp_path / f"rootfs{depth}"
        real = root.joinpath(*parents[:depth])
        real.mkdir(parents=True)
        (real / parents[depth]).symlink_to(host)
        with pytest.raises(rootfs_io.UnsafePath):
            rootfs_io.write_file(root, rel, b"x")
        assert sorted(os.listdir(host)) == ["file"]
        assert (host / "file").read_text() == "precious\n"


def test_a_parent_linking_to_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to("/")
    with pytest.raises(rootfs_io.UnsafePath):
        rootfs_io.write_file(root, "etc/wrenn-test-never-written", b"x")
    assert not Path("/wrenn-test-never-written").exists()


def test_a_dangling_parent_link_is_refused(tmp_path: Path, host: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to(host / "missing")
    with pytest.raises(rootfs_io.UnsafePath):
        rootfs_io.write_file(root, "etc/resolv.conf", b"x")
    with pytest.raises(rootfs_io.UnsafePath):
        rootfs_io.make_dirs(root, "etc/sub")
    assert not (host / "missing").exists()


def test_a_file_as_parent_is_refused(tree: Path) -> None:
    (tree / "opt").write_text("")
    with pytest.raises(rootfs_io.UnsafePath):
        rootfs_io.write_file(tree, "opt/x", b"x")


def test_dot_dot_is_refused(tree: Path, host: Path) -> None:
    for rel in ("../host/file", "etc/../../host/file", ".."):
        with pytest.raises(ValueError):
            rootfs_io.write_file(tree, rel, b"x")
        with pytest.raises(ValueError):
            rootfs_io.make_dirs(tree, rel)
    assert (host / "file").read_text() == "precious\n"


def test_make_dirs_goes_through_no_link(tree: Path, host: Path) -> None:
    rootfs_io.make_dirs(tree, "opt/wrenn/envd")
    assert (tree / "opt/wrenn/envd").is_dir()
    (tree / "srv").symlink_to(host)
    with pytest.raises(rootfs_io.UnsafePath):
        rootfs_io.make_dirs(tree, "srv/wrenn")
    assert sorted(os.listdir(host)) == ["file"]


def test_remove_files_in_unlinks_links_not_their_targets(tree: Path, host: Path) -> None:
    cache = tree / "var/cache"
    (cache / "partial").mkdir(parents=True)
    (cache / "a.deb").write_text("")
    (cache / "link").symlink_to(host / "file")
    rootfs_io.remove_files_in(tree, "var/cache")
    assert sorted(os.listdir(cache)) == ["partial"]
    assert (host / "file").read_text() == "precious\n"
    (tree / "var/lists").symlink_to(host)
    with pytest.raises(rootfs_io.UnsafePath):
        rootfs_io.remove_files_in(tree, "var/lists")
    assert (host / "file").exists()


def test_a_link_put_back_while_writing_is_never_followed(tree: Path, host: Path) -> None:
    """A running capsule racing the agent: whatever interleaving, the host file stays intact."""
    target = tree / "etc/resolv.conf"
    stop = threading.Event()

    def plant() -> None:
        while not stop.is_set():
            try:
                target.unlink()
            except (FileNotFoundError, IsADirectoryError):
                pass
            try:
                target.symlink_to(host / "file")
            except FileExistsError:
                pass

    attacker = threading.Thread(target=plant)
    attacker.start()
    try:
        for _ in range(300):
            try:
                rootfs_io.write_file(tree, "etc/resolv.conf", b"nameserver 192.0.2.1\n")
            except rootfs_io.UnsafePath:
                pass  # gave up against a link put back every time: refusing is fine
    finally:
        stop.set()
        attacker.join()
    assert (host / "file").read_text() == "precious\n"
