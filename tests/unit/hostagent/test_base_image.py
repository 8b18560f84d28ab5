"""The base template's slimming (base_image.slim): translations, manuals and documentation go,
each package's copyright notice stays, and dpkg is told to leave them out of later installs. Its
login profile (base_image.quick_login_profile): bash reads it without spawning `id`."""

from __future__ import annotations

import subprocess
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


# Debian bookworm's /etc/profile, as debootstrap leaves it (the part that sets PATH).
DEBIAN_PROFILE = """\
if [ "$(id -u)" -eq 0 ]; then
  PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
else
  PATH="/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
fi
export PATH
"""


def _login_path(shell: str, profile: Path) -> tuple[str, bool]:
    """PATH after `shell` reads `profile`, and whether it ran `id` to get there (an `id`
    function stands in front of the real one and says so)."""
    script = f'id() {{ echo spawned >&2; command id "$@"; }}; . {profile}; echo "$PATH"'
    done = subprocess.run([shell, "-c", script], capture_output=True, text=True, check=True)
    return done.stdout.strip(), "spawned" in done.stderr


def test_a_login_bash_reads_the_profile_without_running_id_and_gets_the_same_path(
    tmp_path: Path,
) -> None:
    original = tmp_path / "original"
    original.write_text(DEBIAN_PROFILE)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/profile").write_text(DEBIAN_PROFILE)
    base_image.quick_login_profile(tmp_path)
    quick = tmp_path / "etc/profile"
    assert quick.read_text() != DEBIAN_PROFILE
    path, spawned = _login_path("/bin/bash", original)
    assert spawned and path
    assert _login_path("/bin/bash", quick) == (path, False)
    # Other shells have no $EUID: they still ask `id`, and get the same PATH.
    assert _login_path("/bin/sh", quick) == (_login_path("/bin/sh", original)[0], True)


def test_a_tree_without_the_profile_or_its_uid_test_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    base_image.quick_login_profile(tmp_path)
    assert not (tmp_path / "etc/profile").exists()
    (tmp_path / "etc/profile").write_text("export PATH=/bin\n")
    base_image.quick_login_profile(tmp_path)
    assert (tmp_path / "etc/profile").read_text() == "export PATH=/bin\n"
