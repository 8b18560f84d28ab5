"""The shapes of what the agent and envd send each other (docs/envd-api.md), as the agent's modules
pass them around. They are the JSON documents themselves (TypedDicts are plain dicts at run
time), so the wire format is exactly envd's; output bytes arrive base64-decoded."""

from __future__ import annotations

from typing import Literal, NotRequired, Required, TypedDict


class PtySize(TypedDict):
    cols: int
    rows: int


class ProcessSpec(TypedDict, total=False):
    """POST /processes: what to run, and how."""

    cmd: Required[str]
    args: list[str] | None
    env: dict[str, str] | None
    cwd: str | None
    user: str | None
    stdin: bool
    pty: PtySize | None
    tag: str | None
    # The most bytes of each output stream envd sends (it cuts the rest).
    max_output: int


class StartEvent(TypedDict):
    type: Literal["start"]
    pid: int


class StdoutEvent(TypedDict):
    type: Literal["stdout"]
    data: bytes


class StderrEvent(TypedDict):
    type: Literal["stderr"]
    data: bytes


class ExitEvent(TypedDict):
    type: Literal["exit"]
    exit_code: int
    signal: NotRequired[int | None]
    # Sent when the spec had max_output.
    stdout_truncated: NotRequired[bool]
    stderr_truncated: NotRequired[bool]


# One line of a process's event stream.
Event = StartEvent | StdoutEvent | StderrEvent | ExitEvent
EVENT_TYPES = ("start", "stdout", "stderr", "exit")


class WatchEvent(TypedDict):
    """One change of GET /fs/watch: `op` one of WATCH_OPS, `name` relative to the watched
    directory ("" for the directory itself; the stream ends after it was removed or moved)."""

    op: str
    name: str


# What a watch reports: E2B's filesystem event types, "overflow" (events were lost), and
# "started" (the watch is in place; always first).
WATCH_OPS = ("create", "write", "remove", "rename", "chmod", "overflow", "started")


class ProcessInfo(TypedDict):
    pid: int
    cmd: str
    args: NotRequired[list[str] | None]
    cwd: NotRequired[str | None]
    user: NotRequired[str | None]
    tag: NotRequired[str | None]
    pty: NotRequired[bool | None]
    running: bool
    exit_code: NotRequired[int | None]
    started_at: float


class FileEntry(TypedDict):
    name: str
    path: str
    type: str  # file | dir | symlink | other
    size: int
    mode: int
    permissions: str
    owner: str
    group: str
    modified_at: float
    symlink_target: NotRequired[str | None]


class PortInfo(TypedDict):
    """GET /ports: one listening TCP port, checked by the client (envd is not trusted)."""

    port: int
    address: str
    pid: int | None
    command: str | None
