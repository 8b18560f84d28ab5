"""Client of the in-capsule agent (envd, see docs/envd-api.md), one per running capsule.

envd lives inside the capsule, where root may be hostile: every answer is read with a bound
(an event line, a JSON document, an error body), so a tampered envd cannot make the agent
buffer without end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx

from . import errors
from .envd_types import (
    EVENT_TYPES,
    WATCH_OPS,
    Event,
    FileEntry,
    PortInfo,
    ProcessInfo,
    ProcessSpec,
    WatchEvent,
)
from .versions import clean

_ERRORS: dict[str, type[errors.AgentError]] = {
    "invalid_argument": errors.InvalidArgument,
    "not_found": errors.NotFound,
    "already_exists": errors.AlreadyExists,
    "permission_denied": errors.PermissionDenied,
    "resource_exhausted": errors.ResourceExhausted,
}

# envd sends at most 64 KiB of output per event (base64: ~88 KiB); anything longer is not envd.
MAX_EVENT_LINE = 1 << 20
# JSON answers: a directory listing of LIST_LIMIT entries with long paths fits easily.
MAX_JSON = 64 << 20
LIST_LIMIT = 10000  # entries of one listing, by default and at most (envd's own cap)
MAX_TUNNEL_HEAD = 64 * 1024  # envd's answer to a tunnel request: its head, or an error body
MAX_PORTS = 1024  # listening ports of one answer (envd's own cap)
MAX_COMMAND = 512  # characters of a listening process's command line (envd's own cap)
FAST_POLL_SEC = 0.005
FAST_POLL_FOR_SEC = 1.0
MAX_HEALTH = 4096  # envd's /health answer: a status, its version and pid


@dataclass
class Listing:
    entries: list[FileEntry]
    truncated: bool
    next_cursor: str


class EnvdClient:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.base_url = f"http://{host}:{port}"
        self._address = (host, port)
        # trust_env=False: a proxy set in the agent's environment must never see capsule traffic.
        # verify=False: envd speaks plain HTTP on the capsule's own veth, never TLS, and the
        # default TLS context (the CA bundle loaded) costs ~13 ms of the event loop per client:
        # every cold create and resume makes one.
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            trust_env=False,
            verify=False,
            limits=httpx.Limits(max_keepalive_connections=16, keepalive_expiry=60),
        )
        # Requests and streams open now, and what runs before each starts: the dozer (doze.py)
        # freezes no capsule while any is open and thaws a dozing one first.
        self.in_use = 0
        self.before_use: Callable[[], None] = _nothing

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Around anything that reaches envd (or a tunnel through it)."""
        self.before_use()
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1

    async def aclose(self) -> None:
        await self._http.aclose()

    def set_token(self, token: str) -> None:
        self._http.headers["Authorization"] = f"Bearer {token}"

    # -- plumbing --------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kw: Any) -> bytes:
        """The answer's body (at most MAX_JSON bytes); an error status raises."""
        try:
            with self.using():
                async with self._http.stream(method, path, **kw) as resp:
                    body = await _read_capped(resp, MAX_JSON)
        except httpx.TransportError as e:
            raise errors.Unavailable("capsule agent is not reachable") from e
        if resp.status_code >= 400:
            _raise_for(resp.status_code, body)
        return body

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        body = await self._request(method, path, **kw)
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise errors.Internal("capsule agent sent an invalid answer") from None

    # -- ports -----------------------------------------------------------------------------

    async def list_ports(self) -> list[PortInfo]:
        """The capsule's listening TCP ports; entries that are not envd's shape are dropped."""
        data = await self._json("GET", "/ports")
        raw = data.get("ports") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            raise errors.Internal("capsule agent sent an invalid answer")
        by_port: dict[int, PortInfo] = {}
        for port in map(_port_info, raw[:MAX_PORTS]):
            if port is not None:
                by_port.setdefault(port["port"], port)
        return [by_port[p] for p in sorted(by_port)]

    # -- tunnels ---------------------------------------------------------------------------

    async def open_tunnel(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw connection through envd to `port` on the capsule's loopback (envd answers 101,
        then splices; see envd/tunnel.py)."""
        auth = self._http.headers["Authorization"]
        # The caller counts the tunnel's life as a use (`using`) once it is open.
        with self.using():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*self._address, limit=MAX_TUNNEL_HEAD), 5.0
                )
            except (OSError, TimeoutError) as e:
                raise errors.Unavailable("capsule agent is not reachable") from e
            try:
                request = (
                    f"GET /tunnel?port={port} HTTP/1.1\r\nHost: envd\r\nAuthorization: {auth}\r\n"
                    "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                )
                writer.write(request.encode("latin-1"))
                # envd answers once it has connected (its own connect timeout is 5 s per address).
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15.0)
                status, length = _tunnel_head(head)
                if status != 101:
                    body = await asyncio.wait_for(reader.readexactly(length), 5.0)
                    _raise_tunnel(status, body, port)
            except BaseException as e:
                writer.close()
                if isinstance(e, (OSError, TimeoutError, asyncio.IncompleteReadError)):
                    raise errors.Unavailable("capsule agent is not reachable") from e
                if isinstance(e, (asyncio.LimitOverrunError, ValueError)):
                    raise errors.Internal("capsule agent sent an invalid answer") from e
                raise
            return reader, writer

    # -- health and defaults ---------------------------------------------------------------

    async def wait_ready(self, timeout: float, alive: Callable[[], bool] = lambda: True) -> str:
        """Poll /health until envd answers; it needs a few hundred ms after the sandbox starts.
        Returns the version it reports ("" when it sent none that looks like one). `alive`
        says whether the sandbox still runs: one that died does not keep the caller waiting
        for the whole timeout."""
        self.before_use()
        start = time.monotonic()
        deadline = start + timeout
        delay = FAST_POLL_SEC
        while True:
            try:
                resp = await self._http.get("/health", timeout=2.0)
                if resp.status_code == 200:
                    return _reported_version(resp)
            except httpx.TransportError:
                pass
            if not alive():
                raise errors.SandboxExited()
            now = time.monotonic()
            if now > deadline:
                raise errors.Timeout("capsule agent did not start in time")
            await asyncio.sleep(delay)
            # Every ms between envd's start and its first answer is a cold create's: poll often
            # while a start usually ends, then back off (a loaded host's starts take seconds).
            if now - start > FAST_POLL_FOR_SEC:
                delay = min(delay * 1.5, 0.05)

    async def health(self) -> dict[str, object]:
        result: dict[str, object] = await self._json("GET", "/health", timeout=5.0)
        return result

    async def init(
        self,
        default_user: str | None = None,
        env: dict[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        body = {"default_user": default_user or None, "env": env or None, "token": token}
        await self._request("POST", "/init", json=body)

    async def prepare_snapshot(self) -> None:
        await self._request("POST", "/snapshot/prepare", timeout=120.0)

    # -- processes -------------------------------------------------------------------------

    async def start_process(self, spec: ProcessSpec) -> AsyncIterator[Event]:
        """Start a process and stream its events: start, stdout/stderr (bytes), exit."""
        # Closed with this generator: the stream's connection and its use end with the caller's.
        async with contextlib.aclosing(self._stream("POST", "/processes", json=spec)) as events:
            async for ev in events:
                yield ev

    async def connect(self, pid: int) -> AsyncIterator[Event]:
        async with contextlib.aclosing(self._stream("GET", f"/processes/{pid}/stream")) as events:
            async for ev in events:
                yield ev

    async def _stream(self, method: str, path: str, **kw: Any) -> AsyncGenerator[Event, None]:
        timeout = httpx.Timeout(None, connect=5.0)
        with self.using():
            try:
                async with self._http.stream(method, path, timeout=timeout, **kw) as resp:
                    if resp.status_code >= 400:
                        _raise_for(resp.status_code, await _read_capped(resp, MAX_JSON))
                    async for line in _lines(resp, MAX_EVENT_LINE):
                        ev: dict[str, Any] = json.loads(line)
                        if ev.get("type") not in EVENT_TYPES:
                            continue  # not an event of this protocol: nothing to pass on
                        if ev["type"] in ("stdout", "stderr"):
                            ev["data"] = base64.b64decode(ev["data"])
                        yield cast(Event, ev)
            except httpx.TransportError as e:
                raise errors.Unavailable("capsule agent is not reachable") from e

    async def list_processes(self) -> list[ProcessInfo]:
        data = await self._json("GET", "/processes")
        procs: list[ProcessInfo] = data["processes"]
        return procs

    async def send_stdin(self, pid: int, data: bytes) -> None:
        await self._request("POST", f"/processes/{pid}/stdin", content=data)

    async def close_stdin(self, pid: int) -> None:
        await self._request("POST", f"/processes/{pid}/stdin/close")

    async def signal(self, pid: int, signal: int) -> None:
        await self._request("POST", f"/processes/{pid}/signal", json={"signal": signal})

    async def resize(self, pid: int, cols: int, rows: int) -> None:
        await self._request("POST", f"/processes/{pid}/resize", json={"cols": cols, "rows": rows})

    # -- files -----------------------------------------------------------------------------

    async def read_file(self, path: str, user: str | None = None) -> AsyncIterator[bytes]:
        params = _params(path=path, user=user)
        with self.using():
            try:
                async with self._http.stream(
                    "GET", "/files", params=params, timeout=httpx.Timeout(None, connect=5.0)
                ) as resp:
                    if resp.status_code >= 400:
                        _raise_for(resp.status_code, await _read_capped(resp, MAX_JSON))
                    async for chunk in resp.aiter_bytes(256 * 1024):
                        yield chunk
            except httpx.TransportError as e:
                raise errors.Unavailable("capsule agent is not reachable") from e

    async def write_file(
        self,
        path: str,
        body: bytes | AsyncIterator[bytes],
        user: str | None = None,
        mode: int | None = None,
    ) -> FileEntry:
        params = _params(path=path, user=user, mode=f"{mode:o}" if mode else None)
        entry: FileEntry = await self._json(
            "PUT", "/files", params=params, content=body, timeout=httpx.Timeout(None, connect=5.0)
        )
        return entry

    async def list_dir(
        self,
        path: str,
        depth: int = 1,
        user: str | None = None,
        *,
        limit: int = LIST_LIMIT,
        after: str = "",
    ) -> Listing:
        """The first `limit` entries (path order) past `after`."""
        params = _params(path=path, depth=depth, user=user, limit=limit, after=after)
        data = await self._json("GET", "/fs/list", params=params)
        entries: list[FileEntry] = data["entries"]
        truncated = bool(data.get("truncated"))
        # An envd that predates paging answers with everything: page it here.
        if after:
            entries = [e for e in entries if e["path"] > after]
        if len(entries) > limit:
            del entries[limit:]
            truncated = True
        cursor = entries[-1]["path"] if truncated and entries else ""
        return Listing(entries, truncated, cursor)

    async def stat(self, path: str, user: str | None = None) -> FileEntry:
        entry: FileEntry = await self._json("GET", "/fs/stat", params=_params(path=path, user=user))
        return entry

    async def mkdir(self, path: str, user: str | None = None) -> FileEntry:
        entry: FileEntry = await self._json("POST", "/fs/mkdir", json={"path": path, "user": user})
        return entry

    async def move(self, source: str, destination: str, user: str | None = None) -> FileEntry:
        body = {"source": source, "destination": destination, "user": user}
        entry: FileEntry = await self._json("POST", "/fs/move", json=body)
        return entry

    async def remove(self, path: str, user: str | None = None) -> None:
        await self._request("POST", "/fs/remove", json={"path": path, "user": user})

    async def watch_dir(
        self, path: str, recursive: bool, user: str | None = None
    ) -> AsyncIterator[WatchEvent]:
        """A directory's changes (docs/envd-api.md): "started" first, then one event per change,
        until envd ends the stream (the directory went) or the caller stops iterating."""
        params = _params(path=path, recursive="true" if recursive else "false", user=user)
        timeout = httpx.Timeout(None, connect=5.0)
        with self.using():
            try:
                async with self._http.stream(
                    "GET", "/fs/watch", params=params, timeout=timeout
                ) as resp:
                    if resp.status_code >= 400:
                        _raise_for(resp.status_code, await _read_capped(resp, MAX_JSON))
                    async for line in _lines(resp, MAX_EVENT_LINE):
                        event = _watch_event(line)
                        if event is not None:
                            yield event
            except httpx.TransportError as e:
                raise errors.Unavailable("capsule agent is not reachable") from e


def _nothing() -> None:
    pass


async def _read_capped(resp: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise errors.Internal("capsule agent sent an oversized answer")
    return bytes(body)


async def _lines(resp: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The non-empty lines of a streamed answer, none longer than `limit`."""
    pending = bytearray()
    async for chunk in resp.aiter_bytes():
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if end > start:
                yield bytes(pending[start:end])
            start = end + 1
        del pending[:start]
        if len(pending) > limit:
            raise errors.Internal("capsule agent sent an oversized event")
    if pending.strip():
        yield bytes(pending)


def _watch_event(line: bytes) -> WatchEvent | None:
    """One line of a watch stream as an event; None for lines that carry none (the stream's
    end). An error line raises it."""
    try:
        raw = json.loads(line)
        kind = raw["type"]
    except (ValueError, KeyError, TypeError):
        raise errors.Internal("capsule agent sent an invalid event") from None
    if kind == "start":
        return {"op": "started", "name": ""}
    if kind == "overflow":
        return {"op": "overflow", "name": ""}
    if kind == "error":
        _raise_for(500, json.dumps({"error": raw}).encode())
    if kind != "event":
        return None
    op, name = raw.get("op"), raw.get("name")
    if op not in WATCH_OPS or not isinstance(name, str):
        raise errors.Internal("capsule agent sent an invalid event")
    # Valid UTF-8 for the message (a lone surrogate from JSON would fail it).
    return {"op": op, "name": name.encode("utf-8", "replace").decode("utf-8")}


def _params(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v not in (None, "")}


def _tunnel_head(head: bytes) -> tuple[int, int]:
    """Status and Content-Length (bounded) of envd's answer to a tunnel request."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if not 0 <= length <= MAX_TUNNEL_HEAD:
        raise ValueError("error body too long")
    return status, length


def _raise_tunnel(status: int, body: bytes, port: int) -> None:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = ""
    if status == 502 and code == "connection_refused":
        # Our own words: the message is about the port, not whatever the capsule said.
        raise errors.Unavailable(f"nothing is listening on port {port} in the capsule")
    _raise_for(status, body)


def _raise_for(status: int, body: bytes) -> None:
    try:
        err = json.loads(body)["error"]
        code, message = err["code"], str(err["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "", ""
    if status == 409 and code != "already_exists":
        raise errors.InvalidState(message or "conflict")
    cls = _ERRORS.get(code)
    if cls is None:
        raise errors.Internal("capsule agent error")
    raise cls(message)


def _port_info(raw: object) -> PortInfo | None:
    if not isinstance(raw, dict):
        return None
    port, address, pid, command = (raw.get(k) for k in ("port", "address", "pid", "command"))
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return None
    try:
        address = str(ipaddress.ip_address(address if isinstance(address, str) else ""))
    except ValueError:
        return None
    if not isinstance(pid, int) or isinstance(pid, bool) or not 1 <= pid < 1 << 31:
        pid = None
    if not isinstance(command, str) or pid is None:
        command = None
    else:
        # Valid UTF-8 (a lone surrogate from JSON would fail the message), NULs as spaces.
        text = command[:MAX_COMMAND].encode("utf-8", "replace").decode("utf-8")
        command = text.replace("\x00", " ") or None
    return {"port": port, "address": address, "pid": pid, "command": command}


def _reported_version(resp: httpx.Response) -> str:
    """The version in envd's /health answer, if it is a short JSON object naming one."""
    if len(resp.content) > MAX_HEALTH:
        return ""
    try:
        body = json.loads(resp.content)
    except ValueError:
        return ""
    return clean(body.get("version")) if isinstance(body, dict) else ""
