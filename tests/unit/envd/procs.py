"""Reading /proc in tests: which processes of a session are still alive."""

from __future__ import annotations

from pathlib import Path


def session_alive(sid: int) -> list[int]:
    """Live (non-zombie) pids whose session id is `sid`."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[3]) == sid:
            alive.append(int(entry.name))
    return alive
