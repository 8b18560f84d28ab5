"""Endpoints, one function per route, and the table mapping (method, path) to them."""

from __future__ import annotations

import binascii
import json
import os
import signal

from . import __version__, credential, environment_file, fields, files, ports, tunnel, users, watch
from .errors import ApiError, bad
from .httpio import CHUNK, ClientGone
from .output import STREAMS
from .processes import Spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

    from .record import Process
    from .server import Handler

    Body = Dict[str, object]
    Route = Callable[[Handler], None]

STREAM_IDLE_CHECK = 2.0  # seconds between checks that an idle stream's client is still there
PTY_TERM = "xterm-256color"
MAX_OUTPUT = 1 << 30  # the largest max_output a caller may ask for
LIST_LIMIT = 10000  # entries of one directory listing, by default and at most


def _query_path(h: Handler, user: users.User) -> str:
    return users.resolve_path(h.query.get("path", ""), user)


# -- health and settings --------------------------------------------------------------------


def health(h: Handler) -> None:
    h.send_json(200, {"status": "ok", "version": __version__, "pid": os.getpid()})
    h.envd.table.answered.set()


def init(h: Handler) -> None:
    body = h.json_body()
    default_user = fields.text(body, "default_user")
    env = fields.env_vars(body, "env")
    token = fields.text(body, "token")
    if default_user is not None:
        users.lookup(default_user)
    if token is not None and not credential.valid(token.encode()):
        raise bad(
            "token must be %d to %d visible ASCII characters"
            % (credential.MIN_LENGTH, credential.MAX_LENGTH)
        )
    state = h.envd.state
    with state.lock:
        if default_user is not None:
            state.default_user = default_user
        if env is not None:
            state.env = {**state.env, **env}  # replaced, not mutated: spawns read it unlocked
            environment_file.write(state.env)
        if token is not None:
            state.token = token.encode()
    h.send_empty()


def snapshot_prepare(h: Handler) -> None:
    h.json_body()
    os.sync()
    h.send_empty()


# -- processes ------------------------------------------------------------------------------


def start_process(h: Handler) -> None:
    body = h.json_body()
    cmd = fields.required(body, "cmd")
    args = fields.text_list(body, "args")
    extra_env = fields.env_vars(body, "env")
    state = h.envd.state
    user = state.user(fields.text(body, "user"))
    stdin = body.get("stdin", False)
    if not isinstance(stdin, bool):
        raise bad("stdin must be a boolean")
    pty = _pty_size(body.get("pty"))
    tag = fields.text(body, "tag")
    max_output = None
    if body.get("max_output") is not None:
        max_output = fields.integer(body, "max_output", 0, MAX_OUTPUT)
    cwd = _cwd(fields.text(body, "cwd"), user)
    env = users.environment(user)
    if pty is not None:
        env["TERM"] = PTY_TERM
    env.update(state.env)
    env.update(extra_env or {})
    proc = h.envd.table.spawn(Spec(cmd, args, env, cwd, user, stdin, pty, tag))
    _stream(h, proc, max_output)


def _pty_size(value: object) -> Optional[Tuple[int, int]]:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad("pty must be an object with cols and rows")
    return fields.integer(value, "cols", 1, 65535), fields.integer(value, "rows", 1, 65535)


def _cwd(cwd: Optional[str], user: users.User) -> str:
    if cwd is None:
        # A user whose home does not exist still gets to run things.
        return user.home if os.path.isdir(user.home) else "/"
    path = users.resolve_path(cwd, user)
    if not os.path.isdir(path):
        raise bad("cwd does not exist or is not a directory: %s" % path)
    return path


def _stream(h: Handler, proc: Process, max_output: Optional[int] = None) -> None:
    """Send a process's events: start, buffered then live output, exit.

    With `max_output`, at most that many bytes of each stream are sent; the rest is read from
    the process (it never blocks on a full pipe) and dropped, and the exit event says which
    streams were cut (`stdout_truncated`, `stderr_truncated`).
    """
    h.start_chunked("application/x-ndjson", b'{"type":"start","pid":%d}\n' % proc.pid)
    cursor = [0, 0]
    left = [max_output, max_output] if max_output is not None else None
    while True:
        events, done = proc.wait_events(cursor, STREAM_IDLE_CHECK)
        lines: List[bytes] = []  # what is there now goes out in one write
        for index, data in events:
            if left is not None:
                room = left[index]
                if room < 0:
                    continue  # this stream was cut already
                if len(data) > room:
                    data = data[:room]
                    left[index] = -1
                else:
                    left[index] = room - len(data)
                if not data:
                    continue
            encoded = binascii.b2a_base64(data, newline=False)
            lines.append(b'{"type":"%s","data":"%s"}\n' % (STREAMS[index].encode(), encoded))
        if done:
            signum = proc.signal
            cut = ""
            if left is not None:
                cut = ',"stdout_truncated":%s,"stderr_truncated":%s' % tuple(
                    "true" if n < 0 else "false" for n in left
                )
            line = '{"type":"exit","exit_code":%d,"signal":%s%s}\n' % (
                proc.exit_code or 0,
                "null" if signum is None else signum,
                cut,
            )
            lines.append(line.encode())
            h.write_chunk(b"".join(lines), last=True)
            return
        if lines:
            h.write_chunk(b"".join(lines))
        if not events and h.client_gone():
            raise ClientGone()


def reattach(h: Handler) -> None:
    _stream(h, h.envd.table.get(h.pid))


def list_processes(h: Handler) -> None:
    h.send_json(200, {"processes": h.envd.table.list()})


def write_stdin(h: Handler) -> None:
    h.envd.table.get(h.pid).write_stdin(h.body.chunks())
    h.send_empty()


def close_stdin(h: Handler) -> None:
    h.envd.table.get(h.pid).close_stdin()
    h.send_empty()


def send_signal(h: Handler) -> None:
    value = h.json_body().get("signal")
    sig = 0
    if isinstance(value, int) and not isinstance(value, bool):
        sig = value
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        member = signal.Signals.__members__.get(name)
        sig = int(member) if member is not None else 0
    if not 0 < sig < signal.NSIG:
        raise bad("signal must be a signal name like SIGTERM or a number: %r" % (value,))
    h.envd.table.signal(h.pid, sig)
    h.send_empty()


def resize(h: Handler) -> None:
    body = h.json_body()
    cols, rows = fields.integer(body, "cols", 1, 65535), fields.integer(body, "rows", 1, 65535)
    h.envd.table.get(h.pid).resize(cols, rows)
    h.send_empty()


# -- files ----------------------------------------------------------------------------------


def read_file(h: Handler) -> None:
    path = _query_path(h, h.envd.state.user(h.query.get("user")))
    fd, size = files.open_read(path)
    try:
        data = os.read(fd, min(size, CHUNK) if size else CHUNK)
        if not size and data:
            _send_unsized(h, fd, data)
            return
        head = [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        h.send_head(200, head, data)  # headers and a small file in one write
        left = size - len(data)
        while left > 0:
            data = os.read(fd, min(left, CHUNK))
            if not data:  # the file shrank: the promised length cannot be met
                h.close_connection = True
                return
            h.write_raw(data)
            left -= len(data)
    finally:
        os.close(fd)


def _send_unsized(h: Handler, fd: int, data: bytes) -> None:
    """Pseudo-files (/proc, /sys) report size 0 but have content: send it chunked."""
    h.send_head(
        200, [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")]
    )
    while data:
        h.write_chunk(data)
        data = os.read(fd, CHUNK)
    h.end_chunked()


def write_file(h: Handler) -> None:
    user = h.envd.state.user(h.query.get("user"))
    path = _query_path(h, user)
    mode_text = h.query.get("mode")
    mode = None
    if mode_text is not None:
        try:
            mode = int(mode_text, 8)
        except ValueError:
            raise bad("mode must be octal, like 0644") from None
        if not 0 <= mode <= 0o7777:
            raise bad("mode must be octal, like 0644")
    try:
        entry = files.write_file(path, user, mode, h.body.chunks())
    except ApiError as exc:
        if exc.status == 413:
            # The sender is still streaming: take the rest, so it can read this answer instead
            # of failing on a connection closed under it.
            h.body.drain(limit=1 << 62)
        raise
    h.send_json(200, entry)


def list_dir(h: Handler) -> None:
    path = _query_path(h, h.envd.state.user(h.query.get("user")))
    depth_text = h.query.get("depth", "1")
    if not depth_text.isdigit() or int(depth_text) < 1:
        raise bad("depth must be an integer >= 1")
    limit_text = h.query.get("limit", str(LIST_LIMIT))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= LIST_LIMIT:
        raise bad("limit must be an integer from 1 to %d" % LIST_LIMIT)
    listing = files.list_dir(path, int(depth_text), int(limit_text), h.query.get("after", ""))
    h.send_json(200, listing)


def stat_path(h: Handler) -> None:
    path = _query_path(h, h.envd.state.user(h.query.get("user")))
    h.send_json(200, files.stat_entry(path))


def make_dir(h: Handler) -> None:
    body = h.json_body()
    user = h.envd.state.user(fields.text(body, "user"))
    h.send_json(200, files.make_dirs(users.resolve_path(fields.required(body, "path"), user), user))


def move(h: Handler) -> None:
    body = h.json_body()
    user = h.envd.state.user(fields.text(body, "user"))
    source = users.resolve_path(fields.required(body, "source"), user)
    destination = users.resolve_path(fields.required(body, "destination"), user)
    h.send_json(200, files.move(source, destination, user))


def remove(h: Handler) -> None:
    body = h.json_body()
    user = h.envd.state.user(fields.text(body, "user"))
    files.remove(users.resolve_path(fields.required(body, "path"), user))
    h.send_empty()


def watch_dir(h: Handler) -> None:
    """Stream a directory's filesystem events (see watch.py) until the client goes or the
    directory does."""
    user = h.envd.state.user(h.query.get("user"))
    path = _query_path(h, user)
    recursive = h.query.get("recursive", "false")
    if recursive not in ("true", "false"):
        raise bad("recursive must be true or false")
    watcher = watch.open_watch(path, recursive == "true", user)
    try:
        h.start_chunked("application/x-ndjson", b'{"type":"start"}\n')
        while True:
            events, end = watcher.wait(STREAM_IDLE_CHECK)
            lines = [
                json.dumps({"type": "event", "op": op, "name": name}) + "\n"
                if op != "overflow"
                else '{"type":"overflow"}\n'
                for op, name in events
            ]
            if end == "limit":
                error = ApiError(413, "too many directories to watch (at most %d)" % watch.MAX_DIRS)
                lines.append(json.dumps({"type": "error", **error.body()["error"]}) + "\n")
            elif end is not None:
                lines.append('{"type":"end","reason":"%s"}\n' % end)
            if end is not None:
                h.write_chunk("".join(lines).encode(), last=True)
                return
            if lines:
                h.write_chunk("".join(lines).encode())
            if not events and h.client_gone():
                raise ClientGone()
    finally:
        watch.release(watcher)


def open_tunnel(h: Handler) -> None:
    """101, then the connection carries raw bytes to and from the port (see tunnel.py). The agent
    sends nothing after the request until it has read the 101, so no byte sits in rfile's buffer."""
    text = h.query.get("port", "")
    port = int(text) if text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise bad("port must be an integer from 1 to 65535")
    if port == h.envd.server_port:
        raise ApiError(403, "the capsule agent's own port cannot be tunnelled")
    upstream = tunnel.open_local(port)
    try:
        h.send_head(101, [("Connection", "Upgrade"), ("Upgrade", "tcp")])
    except BaseException:
        upstream.close()
        raise
    h.close_connection = True
    tunnel.splice(h.connection, upstream)


def list_ports(h: Handler) -> None:
    """The capsule's listening TCP ports, envd's own left out."""
    h.send_json(200, {"ports": ports.listening([h.envd.server_port], os.getpid())})


ROUTES: Dict[Tuple[str, str], Route] = {
    ("GET", "/health"): health,
    ("POST", "/init"): init,
    ("POST", "/snapshot/prepare"): snapshot_prepare,
    ("GET", "/processes"): list_processes,
    ("POST", "/processes"): start_process,
    ("GET", "/processes/{pid}/stream"): reattach,
    ("POST", "/processes/{pid}/stdin"): write_stdin,
    ("POST", "/processes/{pid}/stdin/close"): close_stdin,
    ("POST", "/processes/{pid}/signal"): send_signal,
    ("POST", "/processes/{pid}/resize"): resize,
    ("GET", "/files"): read_file,
    ("PUT", "/files"): write_file,
    ("GET", "/fs/list"): list_dir,
    ("GET", "/fs/stat"): stat_path,
    ("POST", "/fs/mkdir"): make_dir,
    ("POST", "/fs/move"): move,
    ("POST", "/fs/remove"): remove,
    ("GET", "/fs/watch"): watch_dir,
    ("GET", "/tunnel"): open_tunnel,
    ("GET", "/ports"): list_ports,
}


def match(method: str, path: str) -> Tuple[Route, int]:
    """The route for a request and the pid in its path (0 if none)."""
    parts = path.split("/")
    pid = 0
    if len(parts) > 3 and parts[1] == "processes":
        if not parts[2].isdigit():
            raise ApiError(404, "no such process: %s" % parts[2])
        pid = int(parts[2])
        parts[2] = "{pid}"
    route = ROUTES.get((method, "/".join(parts)))
    if route is None:
        raise ApiError(404, "no route for %s %s" % (method, path))
    return route, pid
