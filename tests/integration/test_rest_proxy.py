"""The port proxy with real capsules, through uvicorn: the published SDK's `get_url(port)` names
a web server started in the capsule (on every address, and on loopback only), answered through
the host agent's tunnel; a 20 MB download streams; a port nobody listens on is a clear 502;
without credentials 401, another team's key 404; a WebSocket echo server in the capsule answers
text and binary messages through the proxy."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any

import httpx
import httpx_ws
import pytest

from .test_sdk import sdk, server  # noqa: F401
from .test_ws import _account

pytestmark = pytest.mark.integration

SIZE = 20_000_000

# A WebSocket echo server with the capsule's python3 alone (unfragmented frames, as clients send).
WS_ECHO = """
import base64, hashlib, socket, struct, threading
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b
def handle(c):
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += exact(c, 1)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\\r\\n")
           if l.lower().startswith(b"sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\n"
              b"Connection: Upgrade\\r\\nSec-WebSocket-Accept: " + accept + b"\\r\\n\\r\\n")
    while True:
        b0, b1 = exact(c, 2)
        op, n = b0 & 15, b1 & 127
        if n == 126:
            n = struct.unpack(">H", exact(c, 2))[0]
        elif n == 127:
            n = struct.unpack(">Q", exact(c, 8))[0]
        mask = exact(c, 4)
        data = bytes(x ^ mask[i % 4] for i, x in enumerate(exact(c, n)))
        if op == 8:
            c.sendall(b"\\x88\\x02" + data[:2])
            return
        size = bytes([n]) if n < 126 else b"\\x7e" + struct.pack(">H", n)
        c.sendall(bytes([0x80 | op]) + size + data)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9000))
s.listen()
while True:
    threading.Thread(target=handle, args=(s.accept()[0],), daemon=True).start()
"""


def fetch(http: httpx.Client, url: str, path: str, headers: dict[str, str]) -> httpx.Response:
    """GET `url` + `path`. `*.127.0.0.1` names do not resolve here, so the request goes to the
    control plane's address with the URL's host name as its Host, as a resolver would send it."""
    return http.get(path, headers={"Host": httpx.URL(url).netloc.decode(), **headers})


def user_session(wrenn: Any, base_url: str, key: str, other_key: str) -> dict[str, Any]:
    """What a user writes: a capsule, web servers in it, their URLs, requests to them."""
    seen: dict[str, Any] = {}
    creds = {"X-API-Key": key}
    with (
        wrenn.Capsule(api_key=key, base_url=base_url) as capsule,
        httpx.Client(base_url=base_url, timeout=60) as http,
    ):
        capsule.commands.run(
            "mkdir -p /tmp/srv/a /tmp/srv/b && echo served-a > /tmp/srv/a/index.html && "
            "echo served-b > /tmp/srv/b/index.html && "
            f"head -c {SIZE} /dev/urandom > /tmp/srv/a/big.bin"
        )
        capsule.commands.run("cd /tmp/srv/a && python3 -m http.server 8000", background=True)
        capsule.files.write("/tmp/srv/ws.py", WS_ECHO)
        capsule.commands.run("python3 /tmp/srv/ws.py", background=True)
        capsule.commands.run(
            "cd /tmp/srv/b && python3 -m http.server 8001 --bind 127.0.0.1", background=True
        )
        urls = {port: capsule.get_url(port) for port in (8000, 8001, 8999)}
        seen["capsule_id"], seen["url"] = capsule.capsule_id, urls[8000]
        for port in (8000, 8001):
            deadline = time.monotonic() + 30
            while (resp := fetch(http, urls[port], "/", creds)).status_code == 502:
                assert time.monotonic() < deadline, resp.text
                time.sleep(0.1)
            seen[port] = (resp.status_code, resp.text)
        host = httpx.URL(urls[8000]).netloc.decode()
        with http.stream("GET", "/big.bin", headers={"Host": host, **creds}) as resp:
            seen["big"] = (resp.status_code, resp.headers["content-length"])
            seen["big_received"] = sum(len(chunk) for chunk in resp.iter_raw())
        resp = fetch(http, urls[8999], "/", creds)
        seen["closed"] = (resp.status_code, resp.json())
        ws_url = capsule.get_url(9000)
        ws_host = httpx.URL(ws_url).netloc.decode()
        deadline = time.monotonic() + 30
        # Until it listens; then a plain GET is no WebSocket handshake: the proxy says so.
        while "nothing is listening" in (resp := fetch(http, ws_url, "/", creds)).text:
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.1)
        seen["ws_plain_get"] = resp.status_code
        with httpx_ws.connect_ws("/echo", http, headers={"Host": ws_host, **creds}) as ws:
            ws.send_text("hello through the proxy")
            seen["ws_text"] = ws.receive_text()
            ws.send_bytes(b"\x00\xff" * 1000)
            seen["ws_bytes"] = ws.receive_bytes()
        seen["no_credentials"] = fetch(http, urls[8000], "/", {}).status_code
        seen["other_team"] = fetch(http, urls[8000], "/", {"X-API-Key": other_key}).status_code
    return seen


async def test_get_url_serves_a_web_server_in_the_capsule(
    sdk: ModuleType,  # noqa: F811
    server: tuple[str, str],  # noqa: F811
) -> None:
    base_url, key = server
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as api:
        _token, other_key = await _account(api, "other")
    seen = await asyncio.to_thread(user_session, sdk, base_url, key, other_key)
    assert seen["url"].startswith(f"http://8000-{seen['capsule_id']}.127.0.0.1:")
    assert seen[8000] == (200, "served-a\n")
    assert seen[8001] == (200, "served-b\n")  # listening on the capsule's loopback only
    assert seen["big"] == (200, str(SIZE)) and seen["big_received"] == SIZE
    assert seen["closed"] == (
        502,
        {
            "error": {
                "code": "port_unreachable",
                "message": "nothing is listening on port 8999 in the capsule",
            }
        },
    )
    assert (seen["no_credentials"], seen["other_team"]) == (401, 404)
    assert seen["ws_plain_get"] == 502
    assert seen["ws_text"] == "hello through the proxy"
    assert seen["ws_bytes"] == b"\x00\xff" * 1000
