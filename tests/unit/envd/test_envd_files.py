"""envd files and filesystem endpoints: streaming transfers, listing, stat, mkdir, move, remove."""

from __future__ import annotations

import hashlib
import os
import pwd
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Envd

MiB = 1024 * 1024


def _generated(total: int, digest: hashlib._Hash) -> Iterator[bytes]:
    """`total` bytes of varied content in 1 MiB pieces, hashed on the way out."""
    block = hashlib.sha512(b"seed").digest() * (MiB // 64)
    for index in range(total // MiB):
        piece = index.to_bytes(8, "big") + block[8:]
        digest.update(piece)
        yield piece


def test_large_file_round_trip_is_streamed(fresh_envd: Envd, tmp_path: Path) -> None:
    size = 128 * MiB
    target = tmp_path / "big.bin"
    sent = hashlib.sha256()
    response = fresh_envd.client.put(
        "/files", params={"path": str(target)}, content=_generated(size, sent)
    )
    assert response.status_code == 200, response.text
    assert response.json()["size"] == size
    with target.open("rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == sent.hexdigest()

    received = hashlib.sha256()
    length = 0
    with fresh_envd.client.stream("GET", "/files", params={"path": str(target)}) as download:
        assert download.status_code == 200
        assert download.headers["content-length"] == str(size)
        for piece in download.iter_raw():
            received.update(piece)
            length += len(piece)
    assert length == size
    assert received.hexdigest() == sent.hexdigest()
    # Neither direction held the file in memory (envd alone needs ~15-20 MB).
    assert fresh_envd.rss_peak_kib() < 40 * 1024
    # No temporary file was left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin", "envd.stderr"]


def test_interrupted_upload_leaves_nothing_behind(envd: Envd, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_bytes(b"old")
    request = (
        f"PUT /files?path={tmp_path}/keep.txt HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {envd.token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        "10000\r\n" + "x" * 1000
    )
    with socket.create_connection(("127.0.0.1", envd.port), timeout=10) as sock:
        sock.sendall(request.encode())
        deadline = time.monotonic() + 5
        while len(list(tmp_path.iterdir())) < 2:  # the temporary file appeared
            assert time.monotonic() < deadline
            time.sleep(0.01)
    deadline = time.monotonic() + 5
    while len(list(tmp_path.iterdir())) > 1:
        assert time.monotonic() < deadline, list(tmp_path.iterdir())
        time.sleep(0.01)
    assert (tmp_path / "keep.txt").read_bytes() == b"old"


def test_small_file_round_trip_and_entry(envd: Envd, tmp_path: Path) -> None:
    target = tmp_path / "hello.txt"
    response = envd.client.put("/files", params={"path": str(target)}, content=b"hello\n")
    entry = response.json()
    assert response.status_code == 200
    assert set(entry) == {
        "name", "path", "type", "size", "mode", "permissions", "owner", "group",
        "modified_at", "symlink_target",
    }  # fmt: skip
    assert entry["name"] == "hello.txt" and entry["path"] == str(target)
    assert (entry["type"], entry["size"], entry["mode"]) == ("file", 6, 0o644)
    assert entry["permissions"] == "-rw-r--r--"
    assert (entry["owner"], entry["group"]) == ("root", "root")
    assert entry["modified_at"] == target.stat().st_mtime
    assert entry["symlink_target"] is None
    download = envd.client.get("/files", params={"path": str(target)})
    assert download.content == b"hello\n"
    assert download.headers["content-length"] == "6"
    # Overwrite keeps the mode unless a new one is given.
    target.chmod(0o600)
    envd.client.put("/files", params={"path": str(target)}, content=b"again")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    entry = envd.client.put("/files", params={"path": str(target), "mode": "0755"}, content=b"")
    assert entry.json()["mode"] == 0o755 and target.read_bytes() == b""


def test_pseudo_files_are_read_whole(envd: Envd) -> None:
    response = envd.client.get("/files", params={"path": f"/proc/{envd.proc.pid}/cmdline"})
    assert response.status_code == 200
    assert b"envd.__main__" in response.content


def test_read_errors(envd: Envd, tmp_path: Path) -> None:
    response = envd.client.get("/files", params={"path": str(tmp_path / "missing")})
    assert envd.error(response)[:2] == (404, "not_found")
    response = envd.client.get("/files", params={"path": str(tmp_path)})
    assert envd.error(response)[:2] == (400, "invalid_argument")
    response = envd.client.get("/files")
    assert envd.error(response)[:2] == (400, "invalid_argument")
    os.mkfifo(tmp_path / "fifo")
    response = envd.client.get("/files", params={"path": str(tmp_path / "fifo")})
    assert envd.error(response)[:2] == (400, "invalid_argument")


def test_write_as_user_owns_new_file_and_parents(
    envd: Envd, throwaway_user: str, tmp_path: Path
) -> None:
    uid = pwd.getpwnam(throwaway_user).pw_uid
    target = tmp_path / "a" / "b" / "file.txt"
    response = envd.client.put(
        "/files", params={"path": str(target), "user": throwaway_user}, content=b"data"
    )
    assert response.json()["owner"] == throwaway_user
    assert target.stat().st_uid == uid
    assert (tmp_path / "a").stat().st_uid == uid and (tmp_path / "a" / "b").stat().st_uid == uid
    assert tmp_path.stat().st_uid == 0  # existing directories are left alone
    response = envd.client.put(
        "/files", params={"path": "x", "user": "no-such-user-xyz"}, content=b""
    )
    assert envd.error(response)[:2] == (400, "invalid_argument")


def test_relative_paths_start_at_the_users_home(envd: Envd, throwaway_user: str) -> None:
    home = Path(f"/home/{throwaway_user}")
    params = {"path": "notes/today.txt", "user": throwaway_user}
    assert envd.client.put("/files", params=params, content=b"n").status_code == 200
    assert (home / "notes" / "today.txt").read_bytes() == b"n"
    assert envd.client.get("/fs/stat", params=params).json()["path"] == str(
        home / "notes/today.txt"
    )
    response = envd.client.post("/fs/mkdir", json={"path": "made", "user": throwaway_user})
    assert response.json()["path"] == str(home / "made")
    assert (home / "made").stat().st_uid == pwd.getpwnam(throwaway_user).pw_uid
    # Without a user, relative paths start at root's home.
    assert envd.client.get("/fs/stat", params={"path": "."}).json()["path"] == "/root"


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a")
    (root / "sub" / "b.txt").write_bytes(b"bb")
    (root / "sub" / "deeper" / "c.txt").write_bytes(b"ccc")
    (root / "link").symlink_to("sub")


def test_list_depth_one_and_two(envd: Envd, tmp_path: Path) -> None:
    _tree(tmp_path / "t")
    base = str(tmp_path / "t")

    def listing(depth: str) -> list[tuple[str, str]]:
        response = envd.client.get("/fs/list", params={"path": base, "depth": depth})
        assert response.status_code == 200, response.text
        return [(e["path"][len(base) :], e["type"]) for e in response.json()["entries"]]

    assert listing("1") == [("/a.txt", "file"), ("/link", "symlink"), ("/sub", "dir")]
    assert listing("2") == [
        ("/a.txt", "file"),
        ("/link", "symlink"),  # not followed
        ("/sub", "dir"),
        ("/sub/b.txt", "file"),
        ("/sub/deeper", "dir"),
    ]
    assert ("/sub/deeper/c.txt", "file") in listing("3")
    response = envd.client.get("/fs/list", params={"path": base, "depth": "0"})
    assert envd.error(response)[:2] == (400, "invalid_argument")
    response = envd.client.get("/fs/list", params={"path": base + "/a.txt"})
    assert envd.error(response)[:2] == (400, "invalid_argument")
    response = envd.client.get("/fs/list", params={"path": base + "/missing"})
    assert envd.error(response)[:2] == (404, "not_found")


def test_stat_file_dir_and_symlink(envd: Envd, tmp_path: Path) -> None:
    _tree(tmp_path)

    def stat_of(name: str) -> dict[str, object]:
        response = envd.client.get("/fs/stat", params={"path": str(tmp_path / name)})
        assert response.status_code == 200
        entry: dict[str, object] = response.json()
        return entry

    link = stat_of("link")
    assert (link["type"], link["symlink_target"], link["name"]) == ("symlink", "sub", "link")
    assert str(link["permissions"]).startswith("l")
    directory = stat_of("sub")
    assert directory["type"] == "dir" and str(directory["permissions"]).startswith("d")
    assert directory["mode"] == stat.S_IMODE((tmp_path / "sub").stat().st_mode)
    assert stat_of("sub/deeper/c.txt")["size"] == 3
    response = envd.client.get("/fs/stat", params={"path": str(tmp_path / "nope")})
    assert envd.error(response)[:2] == (404, "not_found")


def test_mkdir_is_idempotent_and_conflicts_with_files(envd: Envd, tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "z"
    for _ in range(2):
        response = envd.client.post("/fs/mkdir", json={"path": str(target)})
        assert response.status_code == 200
        assert response.json()["type"] == "dir" and response.json()["path"] == str(target)
    assert target.is_dir()
    (tmp_path / "file").write_bytes(b"")
    for path in (tmp_path / "file", tmp_path / "file" / "below"):
        response = envd.client.post("/fs/mkdir", json={"path": str(path)})
        assert envd.error(response)[:2] == (409, "already_exists")


def test_move(envd: Envd, tmp_path: Path) -> None:
    (tmp_path / "src.txt").write_bytes(b"moved")
    destination = tmp_path / "new" / "dir" / "dst.txt"
    response = envd.client.post(
        "/fs/move", json={"source": str(tmp_path / "src.txt"), "destination": str(destination)}
    )
    assert response.status_code == 200
    assert response.json()["path"] == str(destination) and response.json()["size"] == 5
    assert destination.read_bytes() == b"moved" and not (tmp_path / "src.txt").exists()
    _tree(tmp_path / "tree")
    response = envd.client.post(
        "/fs/move", json={"source": str(tmp_path / "tree"), "destination": str(tmp_path / "t2")}
    )
    assert response.json()["type"] == "dir"
    assert (tmp_path / "t2" / "sub" / "deeper" / "c.txt").read_bytes() == b"ccc"
    response = envd.client.post(
        "/fs/move", json={"source": str(tmp_path / "gone"), "destination": str(tmp_path / "g")}
    )
    assert envd.error(response)[:2] == (404, "not_found")


def test_remove(envd: Envd, tmp_path: Path) -> None:
    _tree(tmp_path / "tree")
    (tmp_path / "keep").write_bytes(b"")
    (tmp_path / "outside-link").symlink_to(tmp_path / "keep")
    response = envd.client.post("/fs/remove", json={"path": str(tmp_path / "tree")})
    assert response.status_code == 204 and not (tmp_path / "tree").exists()
    # A symlink is removed itself, never what it points to.
    envd.client.post("/fs/remove", json={"path": str(tmp_path / "outside-link")})
    assert (tmp_path / "keep").exists() and not (tmp_path / "outside-link").is_symlink()
    response = envd.client.post("/fs/remove", json={"path": str(tmp_path / "keep")})
    assert response.status_code == 204 and not (tmp_path / "keep").exists()
    response = envd.client.post("/fs/remove", json={"path": str(tmp_path / "tree")})
    assert envd.error(response)[:2] == (404, "not_found")
