"""Recipes and build archives, without a capsule: parsing, the planned steps, and what an
archive may hold and what a COPY takes from it."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from wrenn_server.controlplane.builds import archive
from wrenn_server.controlplane.builds.recipe import (
    Copy,
    Env,
    Run,
    User,
    Workdir,
    describe,
    parse,
    plan,
)
from wrenn_server.controlplane.errors import BadRequest


def test_every_instruction_parses() -> None:
    steps = parse(
        [
            "# a comment",
            "",
            "run apt-get install -y curl",
            "ENV A=1=2",
            "ENV B two words",
            "COPY ./app/../app /opt/app/",
            "USER dev",
            "WORKDIR /srv//x/",
        ]
    )
    assert steps == [
        Run("apt-get install -y curl"),
        Env("A", "1=2"),
        Env("B", "two words"),
        Copy("app", "/opt/app"),
        User("dev"),
        Workdir("/srv/x"),
    ]
    assert [describe(s) for s in steps][3] == "COPY app /opt/app"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("FROM debian", "line 1: unknown instruction"),
        ("RUN", "RUN needs a command"),
        ("ENV =x", "ENV"),
        ("ENV 9X=1", "ENV"),
        ("COPY a", "source and a destination"),
        ("COPY /etc/passwd /x", "inside the archive"),
        ("COPY ../x /x", "inside the archive"),
        ("COPY a relative", "absolute"),
        ("USER Root", "USER"),
        ("USER a b", "USER"),
        ("WORKDIR x", "absolute"),
    ],
)
def test_bad_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse([line])


def test_plan_adds_the_default_user_and_apt_around_the_recipe() -> None:
    recipe = [Run("make")]
    assert plan(recipe, skip_pre_post=True) == [User("wrenn-user"), Run("make")]
    full = plan(recipe, skip_pre_post=False)
    assert full[0] == Run("apt-get update -q", as_root=True)
    assert full[1:3] == [User("wrenn-user"), Run("make")]
    assert full[-1] == Run("apt-get clean", as_root=True)


def _tar(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _file(name: str, size: int = 3, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, mode
    return info


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_archive_members_and_copy_selection(tmp_path: Path) -> None:
    path = _tar(
        tmp_path / "a.tar.gz",
        _dir("app"),
        _file("app/run.sh", mode=0o755),
        _file("app/lib/x.py"),
        _file("./README"),
    )
    found = archive.members(path)
    assert [(m.path, m.is_dir) for m in found] == [
        ("app", True),
        ("app/run.sh", False),
        ("app/lib/x.py", False),
        ("README", False),
    ]
    assert [(m.path, t) for m, t in archive.select(found, "app", "/opt/app")] == [
        ("app/run.sh", "/opt/app/run.sh"),
        ("app/lib/x.py", "/opt/app/lib/x.py"),
    ]
    assert [t for _, t in archive.select(found, "README", "/r.txt")] == ["/r.txt"]
    assert len(archive.select(found, ".", "/x")) == 4
    with pytest.raises(BadRequest, match="not in the archive"):
        archive.select(found, "missing", "/x")
    read = {
        target: (mode, reader.read())
        for target, mode, reader in archive.iter_files(path, {"app/run.sh": "/t/run.sh"})
    }
    assert read == {"/t/run.sh": (0o755, b"xxx")}


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_file("../escape"), "leaves the archive"),
        (_file("/abs"), "leaves the archive"),
        (_file("a/../../escape"), "leaves the archive"),
    ],
)
def test_archives_that_escape_are_refused(
    tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        archive.members(_tar(tmp_path / "bad.tar.gz", member))


def test_links_devices_and_garbage_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("app/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    hard = tarfile.TarInfo("app/hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "app/x"
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    for i, member in enumerate((link, hard, dev)):
        with pytest.raises(BadRequest, match="not a file or directory"):
            archive.members(_tar(tmp_path / f"{i}.tar.gz", member))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"definitely not an archive")
    with pytest.raises(BadRequest, match="readable"):
        archive.members(garbage)


def test_zip_archives(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("app/", "")
        zf.writestr("app/main.py", "print(1)\n")
        zf.writestr("../evil", "x")
    with pytest.raises(BadRequest, match="leaves the archive"):
        archive.members(path)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("app/main.py", "print(1)\n")
    found = archive.members(path)
    assert [(m.path, m.is_dir) for m in found] == [("app/main.py", False)]
    files = list(archive.iter_files(path, {"app/main.py": "/srv/main.py"}))
    # zipfile.writestr stores 0o600: the archive's own mode is kept.
    assert [(target, mode) for target, mode, _ in files] == [("/srv/main.py", 0o600)]
