"""envd's directory watch (GET /fs/watch): the events of real filesystem changes, recursive or not,
the acting user's permission, the stream's end when the directory goes, and its bounds (a kernel
queue overflow reported, too many directories refused, the watch released when the client goes)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from wrenn_server.envd import users, watch
from wrenn_server.envd.errors import ApiError

if TYPE_CHECKING:
    from conftest import Envd


class WatchStream:
    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-ndjson"
        self._lines = response.iter_lines()
        assert self.next() == {"type": "start"}

    def next(self) -> dict[str, Any]:
        line = next(self._lines)
        while not line:
            line = next(self._lines)
        event: dict[str, Any] = json.loads(line)
        return event

    def until(self, op: str, name: str) -> list[tuple[str, str]]:
        """Events up to and including (op, name)."""
        seen: list[tuple[str, str]] = []
        while True:
            event = self.next()
            assert event["type"] == "event", (event, seen)
            seen.append((event["op"], event["name"]))
            if seen[-1] == (op, name):
                return seen

    def rest(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._lines if line]


@contextmanager
def watching(envd: Envd, path: Path | str, **params: str) -> Iterator[WatchStream]:
    with envd.client.stream("GET", "/fs/watch", params={"path": str(path), **params}) as response:
        yield WatchStream(response)


def test_file_operations_are_reported(envd: Envd, tmp_path: Path) -> None:
    with watching(envd, tmp_path) as stream:
        target = tmp_path / "a.txt"
        target.write_bytes(b"one")
        assert stream.until("create", "a.txt")[0] == ("create", "a.txt")
        with target.open("ab") as f:
            f.write(b"two")
        assert ("write", "a.txt") in stream.until("write", "a.txt")
        target.chmod(0o600)
        stream.until("chmod", "a.txt")
        target.rename(tmp_path / "b.txt")
        assert stream.until("create", "b.txt")[-2:] == [("rename", "a.txt"), ("create", "b.txt")]
        (tmp_path / "b.txt").unlink()
        stream.until("remove", "b.txt")


def test_only_a_recursive_watch_sees_subdirectories(envd: Envd, tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    with watching(envd, tmp_path) as flat, watching(envd, tmp_path, recursive="true") as deep:
        (tmp_path / "old" / "f").write_bytes(b"x")
        (tmp_path / "new" / "deeper").mkdir(parents=True)
        (tmp_path / "new" / "deeper" / "g").write_bytes(b"y")
        (tmp_path / "marker").write_bytes(b"")
        assert deep.until("create", "old/f")
        assert deep.until("create", "new/deeper/g")
        seen = flat.until("create", "marker")
        assert ("create", "new") in seen
        assert not [name for _op, name in seen if "/" in name], seen


def test_a_directory_moved_within_the_tree_keeps_being_watched(envd: Envd, tmp_path: Path) -> None:
    (tmp_path / "one" / "inner").mkdir(parents=True)
    with watching(envd, tmp_path, recursive="true") as stream:
        (tmp_path / "one").rename(tmp_path / "two")
        stream.until("create", "two")
        (tmp_path / "two" / "inner" / "h").write_bytes(b"")
        assert stream.until("create", "two/inner/h")[-1] == ("create", "two/inner/h")


def test_the_stream_ends_when_the_directory_is_removed(envd: Envd, tmp_path: Path) -> None:
    watched = tmp_path / "gone"
    watched.mkdir()
    with watching(envd, watched, recursive="true") as stream:
        (watched / "sub").mkdir()
        stream.until("create", "sub")
        shutil.rmtree(watched)
        stream.until("remove", "")
        assert stream.rest() == [{"type": "end", "reason": "removed"}]


def test_refusals(envd: Envd, tmp_path: Path, throwaway_user: str) -> None:
    (tmp_path / "file").write_bytes(b"")
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    cases: list[tuple[dict[str, str], int]] = [
        ({"path": str(tmp_path / "missing")}, 404),
        ({"path": str(tmp_path / "file")}, 400),
        ({"path": str(tmp_path), "recursive": "yes"}, 400),
        ({"path": str(secret), "user": throwaway_user}, 403),
        ({"path": str(secret / "x"), "user": "no-such-user-here"}, 400),
    ]
    for params, status in cases:
        response = envd.client.get("/fs/watch", params=params)
        assert envd.error(response)[0] == status, (params, response.text)


def test_a_user_watches_what_it_may_list(envd: Envd, throwaway_user: str) -> None:
    home = Path(os.path.expanduser(f"~{throwaway_user}"))
    hidden = home / "hidden"
    hidden.mkdir(mode=0o700, exist_ok=True)
    # "." is the user's home.
    with watching(envd, ".", user=throwaway_user, recursive="true") as stream:
        (hidden / "x").write_bytes(b"")  # root-owned 0700 directory: not watched for this user
        (home / "visible").write_bytes(b"")
        seen = stream.until("create", "visible")
        assert ("create", "hidden/x") not in seen


def _inotify_fds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                count += 1
        except OSError:
            pass
    return count


def test_a_client_that_goes_releases_the_watch(fresh_envd: Envd, tmp_path: Path) -> None:
    pid = fresh_envd.proc.pid
    with watching(fresh_envd, tmp_path):
        assert _inotify_fds(pid) == 1
    deadline = time.monotonic() + 10  # envd notices within its idle check (2 s)
    while _inotify_fds(pid):
        assert time.monotonic() < deadline, "the watch outlived its client"
        time.sleep(0.05)


def _me() -> users.User:
    import pwd

    return users.lookup(pwd.getpwuid(os.getuid()).pw_name)


def test_a_queue_overflow_is_reported(tmp_path: Path) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    targets = [tmp_path / "f", tmp_path / "g"]
    for target in targets:
        target.write_bytes(b"")
    watcher = watch.open_watch(str(tmp_path), False, _me())
    try:
        # Alternating files: the kernel merges an event identical to the one queued last.
        for index in range(limit + 100):
            os.utime(targets[index % 2])
        ops: list[str] = []
        while "overflow" not in ops:
            events, end = watcher.wait(5.0)
            assert events and end is None
            ops += [op for op, _name in events]
        assert set(ops) == {"chmod", "overflow"}
    finally:
        watch.release(watcher)


def test_too_many_directories_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "MAX_DIRS", 3)
    for name in "abc":
        (tmp_path / name).mkdir()
    with pytest.raises(ApiError) as refused:
        watch.open_watch(str(tmp_path), True, _me())
    assert refused.value.status == 413
    watcher = watch.open_watch(str(tmp_path), False, _me())  # the refused one left nothing held
    watch.release(watcher)


def test_a_recursive_watch_that_grows_past_its_limit_ends_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "MAX_DIRS", 2)
    watcher = watch.open_watch(str(tmp_path), True, _me())
    try:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        end = None
        deadline = time.monotonic() + 10
        while end is None:
            assert time.monotonic() < deadline
            _events, end = watcher.wait(1.0)
        assert end == "limit"
    finally:
        watch.release(watcher)


def test_every_watch_slot_is_given_back(tmp_path: Path) -> None:
    held = [watch.open_watch(str(tmp_path), False, _me()) for _ in range(watch.MAX_WATCHERS)]
    try:
        with pytest.raises(ApiError) as refused:
            watch.open_watch(str(tmp_path), False, _me())
        assert refused.value.status == 413
    finally:
        for watcher in held:
            watch.release(watcher)
    watch.release(watch.open_watch(str(tmp_path), False, _me()))
