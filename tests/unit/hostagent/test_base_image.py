"""The base template's slimming (base_image.slim): translations, manuals and documentation go,
each package's copyright notice stays, and dpkg is told to leave them out of later installs."""

from __future__ import annotations

from pathlib import Path

from wrenn_server.hostagent import base_image


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_slim_keeps_copyrights_and_everything_else(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        [
            "usr/share/locale/de/LC_MESSAGES/coreutils.mo",
            "usr/share/locale/locale.alias",
            "usr/share/man/man1/ls.1.gz",
            "usr/share/doc/git/copyright",
            "usr/share/doc/git/changelog.Debian.gz",
            "usr/share/doc/git/RelNotes/2.39.txt",
            "usr/share/doc/only-docs/README",
            "usr/share/zoneinfo/UTC",
            "usr/bin/git",
            "etc/passwd",
        ],
    )
    (tmp_path / "usr/share/doc/linked").symlink_to("git")
    base_image.slim(tmp_path)
    assert _files(tmp_path) == [
        "etc/dpkg/dpkg.cfg.d/excludes",
        "etc/passwd",
        "usr/bin/git",
        "usr/share/doc/git/copyright",
        "usr/share/zoneinfo/UTC",
    ]
    assert (tmp_path / "usr/share/locale").is_dir() and (tmp_path / "usr/share/man").is_dir()
    assert (tmp_path / "usr/share/doc/linked").is_symlink()
    excludes = (tmp_path / "etc/dpkg/dpkg.cfg.d/excludes").read_text().splitlines()
    assert "path-exclude=/usr/share/doc/*" in excludes
    assert "path-include=/usr/share/doc/*/copyright" in excludes
