"""envd bounds what one answer holds: a run-to-completion caller gets at most `max_output` bytes
of each stream (the process still runs to its end), and a directory listing returns at most
`limit` entries per page, walking a huge directory without holding it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Envd


def test_max_output_cuts_each_stream_and_says_so(envd: Envd) -> None:
    stream = envd.run(
        cmd="head -c 300000 /dev/zero; printf 'err' >&2; echo done > /dev/null", max_output=100000
    )
    assert len(stream.stdout) == 100000
    assert stream.stderr == b"err"
    assert stream.exit == {
        "type": "exit",
        "exit_code": 0,
        "signal": None,
        "stdout_truncated": True,
        "stderr_truncated": False,
    }


def test_output_of_exactly_the_limit_is_not_truncated(envd: Envd) -> None:
    stream = envd.run(cmd="printf 12345", max_output=5)
    assert stream.stdout == b"12345"
    assert stream.exit is not None and stream.exit["stdout_truncated"] is False


def test_without_max_output_nothing_changes(envd: Envd) -> None:
    stream = envd.run(cmd="head -c 200000 /dev/zero")
    assert len(stream.stdout) == 200000
    assert stream.exit == {"type": "exit", "exit_code": 0, "signal": None}


def test_a_process_past_the_limit_runs_to_its_end(envd: Envd) -> None:
    # 64 MiB through the pipe, 1 KiB to the caller: the rest is read and dropped, so the writer
    # never blocks on a full pipe and exits with its own status.
    stream = envd.run(cmd="head -c 67108864 /dev/zero; exit 7", max_output=1024)
    assert len(stream.stdout) == 1024
    assert stream.exit is not None and stream.exit["exit_code"] == 7
    assert stream.exit["stdout_truncated"] is True
    sent = sum(len(e.get("data", "")) for e in stream.events)
    assert sent < 4096  # base64 of 1 KiB, not of 64 MiB


def test_max_output_must_be_a_non_negative_integer(envd: Envd) -> None:
    for value in (-1, "10", 1.5, True):
        response = envd.client.post("/processes", json={"cmd": "true", "max_output": value})
        assert envd.error(response)[:2] == (400, "invalid_argument"), value


def _names(response_json: dict[str, object], base: str) -> list[str]:
    entries = response_json["entries"]
    assert isinstance(entries, list)
    return [str(e["path"])[len(base) :] for e in entries]


def test_listing_pages_in_path_order(envd: Envd, tmp_path: Path) -> None:
    base = tmp_path / "t"
    for top in ("a", "b", "c"):
        (base / top).mkdir(parents=True)
        for child in ("x", "y"):
            (base / top / child).write_text(child)
    root = str(base)
    seen: list[str] = []
    after = ""
    pages = 0
    while True:
        params = {"path": root, "depth": "2", "limit": "4", "after": after}
        response = envd.client.get("/fs/list", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["entries"]) <= 4
        seen += _names(page, root)
        pages += 1
        if not page["truncated"]:
            assert page["next"] is None
            break
        after = page["next"]
        assert after == root + seen[-1]
    assert pages == 3
    expected = ["/a", "/a/x", "/a/y", "/b", "/b/x", "/b/y", "/c", "/c/x", "/c/y"]
    assert seen == expected


def test_listing_limit_is_checked(envd: Envd, tmp_path: Path) -> None:
    for limit in ("0", "10001", "x", "-1"):
        response = envd.client.get("/fs/list", params={"path": str(tmp_path), "limit": limit})
        assert envd.error(response)[:2] == (400, "invalid_argument"), limit


def test_a_huge_directory_is_listed_in_bounded_memory(fresh_envd: Envd, tmp_path: Path) -> None:
    """200,000 entries with long names: the listing holds `limit` of them, not all; the old
    code built every entry (hundreds of MB) before answering."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(200_000):
        os.symlink("x", big / f"{'f' * 150}-{i:06d}")
    before = fresh_envd.rss_peak_kib()
    response = fresh_envd.client.get("/fs/list", params={"path": str(big), "limit": "100"})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["truncated"] is True
    assert _names(page, str(big)) == [f"/{'f' * 150}-{i:06d}" for i in range(100)]
    default = fresh_envd.client.get("/fs/list", params={"path": str(big)}).json()
    assert len(default["entries"]) == 10000 and default["truncated"] is True
    grown_mib = (fresh_envd.rss_peak_kib() - before) / 1024
    assert grown_mib < 64, f"envd's peak memory grew by {grown_mib:.0f} MiB"
