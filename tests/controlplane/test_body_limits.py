"""Request bodies are bounded per route while they arrive: a declared length over the limit is
refused (413, the common error body) before one byte is read, and a chunked body is refused as
soon as it passes the limit. Uploads that stream on to a capsule are not limited here."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI

from tests.threaded_server import serving
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.settings import Settings

from .helpers import signup

KiB, MiB = 1024, 1024 * 1024


class Call:
    """One request sent straight to the ASGI app, counting how much of the body it read."""

    def __init__(self, app: FastAPI, path: str, headers: dict[str, str], body: Iterator[bytes]):
        self.app, self.path, self.headers, self.body = app, path, headers, body
        self.reads = 0
        self.bytes_read = 0
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self.response = b""

    async def run(self) -> Call:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in self.headers.items()],
            "client": ("127.0.0.1", 40000),
            "server": ("wrenn.test", 80),
        }
        await self.app(scope, self._receive, self._send)
        return self

    async def _receive(self) -> dict[str, Any]:
        self.reads += 1
        piece = next(self.body, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.bytes_read += len(piece)
        return {"type": "http.request", "body": piece, "more_body": True}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            self.response += message.get("body", b"")

    def error(self) -> dict[str, str]:
        body = json.loads(self.response)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
        error: dict[str, str] = body["error"]
        return error


def _endless(piece: bytes = b"x" * (16 * KiB), total: int = 64 * MiB) -> Iterator[bytes]:
    """Far more than any limit (bounded, so that a server that reads it all still ends)."""
    for _ in range(total // len(piece)):
        yield piece


async def test_a_declared_length_over_the_limit_is_refused_unread(app: FastAPI) -> None:
    headers = {"content-type": "application/json", "content-length": str(100 * MiB)}
    call = await Call(app, "/v1/auth/login", headers, _endless()).run()
    assert call.status == 413
    assert call.error()["code"] == "too_large"
    assert "65536 bytes" in call.error()["message"]
    assert call.response_headers["connection"] == "close"
    assert call.reads == 0  # not one byte of the body was taken in


async def test_a_chunked_body_is_refused_once_past_the_limit(app: FastAPI) -> None:
    headers = {"content-type": "application/json", "transfer-encoding": "chunked"}
    call = await Call(app, "/v1/auth/login", headers, _endless()).run()
    assert call.status == 413
    assert call.error()["code"] == "too_large"
    assert call.bytes_read <= 64 * KiB + 16 * KiB  # stopped at the first piece past the limit


async def test_an_unauthenticated_build_upload_is_not_read(app: FastAPI) -> None:
    """The build route reads its multipart body itself (spooling the archive to disk), only
    after the caller is known to be an admin."""
    headers = {
        "content-type": "multipart/form-data; boundary=b",
        "transfer-encoding": "chunked",
        "authorization": "Bearer nope",
    }
    call = await Call(app, "/v1/admin/builds", headers, _endless(b"x" * MiB)).run()
    assert call.status == 401 and call.bytes_read == 0


async def test_limits_per_route(client: httpx.AsyncClient) -> None:
    def post(path: str, size: int, content_type: str = "application/json") -> Any:
        return client.post(path, content=b" " * size, headers={"content-type": content_type})

    # Sign-in, sign-up and the host agents' credential routes: 64 KiB.
    small = ("/v1/auth/login", "/v1/auth/signup", "/v1/hosts/register", "/v1/hosts/auth/refresh")
    for path in small:
        assert (await post(path, 64 * KiB + 1)).status_code == 413, path
        assert (await post(path, 64 * KiB)).status_code == 400, path  # read, then invalid
    heartbeat = "/v1/hosts/host-x/heartbeat"
    assert (await post(heartbeat, 64 * KiB + 1)).status_code == 413
    assert (await post(heartbeat, 64 * KiB)).status_code == 401
    # Other JSON routes: 1 MiB by default (within it, the route reads the body and answers).
    assert (await post("/v1/capsules", MiB + 1)).status_code == 413
    assert (await post("/v1/capsules", MiB)).status_code in (400, 401)
    assert (await post("/v1/admin/builds", MiB + 1)).status_code == 413
    # Uploads stream on to the capsule: no limit here (credentials are checked first).
    form = "multipart/form-data; boundary=b"
    for path in ("/v1/capsules/sb-x/files/write", "/v1/sandboxes/sb-x/files/stream/write"):
        assert (await post(path, 3 * MiB, form)).status_code == 401, path
    # A build's archive: its own limit (the setting, 512 MiB here) plus 1 MiB of fields.
    assert (await post("/v1/admin/builds", 3 * MiB, form)).status_code == 401


async def test_the_json_limit_is_a_setting(settings: Settings, db: Database) -> None:
    app = create_app(
        settings.model_copy(update={"max_json_body_kb": 2, "build_archive_max_mb": 1}), db=db
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        assert (await c.post("/v1/capsules", content=b" " * (2 * KiB + 1))).status_code == 413
        assert (await c.post("/v1/capsules", content=b" " * (2 * KiB))).status_code in (400, 401)
        form = {"content-type": "multipart/form-data; boundary=b"}
        big = await c.post("/v1/admin/builds", content=b" " * (2 * MiB + 1), headers=form)
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "too_large"


async def test_an_admin_build_upload_is_stopped_past_its_limit(
    settings: Settings, db: Database
) -> None:
    """The build route reads its multipart body by hand (the archive spools to disk): a
    chunked archive past the setting is cut off all the same."""
    app = create_app(settings.model_copy(update={"build_archive_max_mb": 1}), db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        admin = await signup(c)  # the first account is the platform admin
    part = (
        b'--b\r\nContent-Disposition: form-data; name="archive"; filename="a.tar"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )

    def body() -> Iterator[bytes]:
        yield part
        yield from _endless(b"x" * (256 * KiB))

    headers = {
        "content-type": "multipart/form-data; boundary=b",
        "transfer-encoding": "chunked",
        "authorization": f"Bearer {admin['token']}",
    }
    call = await Call(app, "/v1/admin/builds", headers, body()).run()
    assert call.status == 413, call.response
    assert call.error()["code"] == "too_large"
    assert call.bytes_read <= 2 * MiB + 256 * KiB + len(part)


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _send_until_refused(base_url: str, head: bytes, frames: Iterator[bytes]) -> tuple[bytes, int]:
    """Send `head`, then body frames for as long as the server takes them; return the server's
    answer and how many body bytes were sent before it stopped taking them."""
    address = urlsplit(base_url)
    sent = 0
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for frame in frames:
                sock.sendall(frame)
                sent += len(frame)
        except OSError:
            pass  # the server closed the connection under us: it takes no more
        answer = b""
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer, sent


def test_a_real_server_answers_413_while_the_client_is_still_sending(app: FastAPI) -> None:
    """A 100 MB body to /v1/auth/login over a real connection: the 413 comes back while the
    client still has almost all of it to send, and the server's memory does not grow."""
    total = 100 * MiB
    piece = b"x" * MiB
    head = (
        b"POST /v1/auth/login HTTP/1.1\r\nHost: wrenn.test\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % total
    )
    with serving(app) as base_url:
        _peak_rss_reset()
        before = _peak_rss_mib()
        answer, sent = _send_until_refused(base_url, head, (piece for _ in range(total // MiB)))
        grown = _peak_rss_mib() - before
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"too_large" in answer or b"connection: close" in answer.lower()
    assert sent < total // 4, f"the server took {sent} bytes of the body"
    assert grown < 50, f"peak memory grew by {grown:.0f} MiB"


def test_a_real_server_stops_a_chunked_body_past_the_limit(app: FastAPI) -> None:
    piece = b"x" * (256 * KiB)
    frame = b"%x\r\n%s\r\n" % (len(piece), piece)
    head = (
        b"POST /v1/auth/signup HTTP/1.1\r\nHost: wrenn.test\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with serving(app) as base_url:
        answer, sent = _send_until_refused(base_url, head, (frame for _ in range(400)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 400 * len(frame) // 4, f"the server took {sent} bytes of the body"
