"""envd remembers resolved users only while the account files stay as they were: any change to
passwd, group or nsswitch.conf (an edit, a file replaced by useradd, one appearing) resolves
again on the next look-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wrenn_server.envd import users
from wrenn_server.envd.errors import ApiError


@pytest.fixture
def accounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Path], list[str]]:
    """Account files in a temporary directory and a resolver recording what it resolved (the
    C library's passwd look-up is outside the unit: the cache in front of it is tested)."""
    files = [tmp_path / name for name in ("passwd", "group", "nsswitch.conf")]
    for f in files:
        f.write_text("x\n")
    resolved: list[str] = []

    def resolve(name: str) -> users.User:
        if name == "ghost":
            raise ApiError(400, "unknown user: ghost")
        resolved.append(name)
        return users.User(name, 1000 + len(resolved), 1000, [1000], "/home/" + name, "")

    monkeypatch.setattr(users, "ACCOUNT_FILES", tuple(str(f) for f in files))
    monkeypatch.setattr(users, "_resolve", resolve)
    monkeypatch.setattr(users, "_cache", users._Cache())
    return files, resolved


def test_a_user_is_resolved_once_while_nothing_changes(
    accounts: tuple[list[Path], list[str]],
) -> None:
    _, resolved = accounts
    first = users.lookup("dev")
    assert users.lookup("dev") is first
    assert users.lookup("ops").name == "ops"
    assert resolved == ["dev", "ops"]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_an_edit_to_any_account_file_resolves_again(
    accounts: tuple[list[Path], list[str]], which: int
) -> None:
    files, resolved = accounts
    before = users.lookup("dev")
    with files[which].open("a") as f:
        f.write("dev:x:1001:1001::/home/dev:/bin/sh\n")
    after = users.lookup("dev")
    assert after is not before and after.uid != before.uid
    assert resolved == ["dev", "dev"]


def test_a_file_replaced_with_the_same_size_and_times_resolves_again(
    accounts: tuple[list[Path], list[str]], tmp_path: Path
) -> None:
    """useradd writes a new file and renames it over the old one: same size and times as
    before must still count as a change (the inode differs)."""
    files, resolved = accounts
    users.lookup("dev")
    st = os.stat(files[0])
    replacement = tmp_path / "passwd.new"
    replacement.write_text("y\n")
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    hold = tmp_path / "old-inode"  # kept alive so the new file cannot reuse its inode number
    os.link(files[0], hold)
    os.replace(replacement, files[0])
    users.lookup("dev")
    assert resolved == ["dev", "dev"]


def test_a_file_appearing_or_vanishing_resolves_again(
    accounts: tuple[list[Path], list[str]],
) -> None:
    files, resolved = accounts
    users.lookup("dev")
    files[2].unlink()
    users.lookup("dev")
    files[2].write_text("passwd: files\n")
    users.lookup("dev")
    assert resolved == ["dev", "dev", "dev"]


def test_unknown_users_are_not_remembered(accounts: tuple[list[Path], list[str]]) -> None:
    for _ in range(2):
        with pytest.raises(ApiError) as err:
            users.lookup("ghost")
        assert err.value.status == 400


def test_the_cache_is_bounded(accounts: tuple[list[Path], list[str]]) -> None:
    _, resolved = accounts
    for i in range(users.MAX_CACHED + 10):
        users.lookup(f"u{i}")
    users.lookup(f"u{users.MAX_CACHED + 5}")  # past the bound: resolved again
    assert len(resolved) == users.MAX_CACHED + 11
