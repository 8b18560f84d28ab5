"""The port proxy over the fake agent: `{port}-{capsule_id}.<domain>` reaches a local web server
standing in for the capsule's port, through the agent's Tunnel. Who may (API key of the team,
a member's JWT; none 401, another team 404), what the service sees (X-Forwarded-*, never the
platform's credentials), bodies both ways, and the errors (closed port 502, paused 409)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import httpx_ws
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request

from ..controlplane.helpers import assert_error
from ..served import served
from ..waiting import wait_for
from .conftest import Stack, StartApp
from .helpers import make_capsule, new_account

BIG = 3 * 1024 * 1024 + 7


class Service(BaseHTTPRequestHandler):
    """Answers with what it received: method, path, headers and the body's length."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/big":
            data = bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_length": len(body),
            "body_head": body[:16].decode("latin-1"),
        }
        data = json.dumps(seen).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def host(port: int, capsule_id: str, domain: str = "wrenn.test") -> dict[str, str]:
    return {"Host": f"{port}-{capsule_id}.{domain}"}


async def test_requests_reach_the_port_with_the_teams_credentials(
    stack: Stack, service: int
) -> None:
    api = stack.client
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    stack.agent.sandboxes[cid].ports[8000] = ("127.0.0.1", service)

    resp = await api.get("/some/path?q=1", headers={**host(8000, cid), **alice.h})
    assert resp.status_code == 200, resp.text
    seen = resp.json()
    assert seen["method"] == "GET" and seen["path"] == "/some/path?q=1"
    assert seen["headers"]["host"] == f"8000-{cid}.wrenn.test"
    assert seen["headers"]["x-forwarded-host"] == f"8000-{cid}.wrenn.test"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert "x-api-key" not in seen["headers"]  # the team's key never reaches the capsule

    # A member's JWT; the Authorization header it came in is not passed on either.
    payload = b"0123456789abcdef" * (BIG // 16)
    resp = await api.post("/upload", content=payload, headers={**host(8000, cid), **alice.jwt})
    assert resp.status_code == 201, resp.text
    seen = resp.json()
    assert (seen["body_length"], seen["body_head"]) == (len(payload), "0123456789abcdef")
    assert "authorization" not in seen["headers"]

    resp = await api.get("/big", headers={**host(8000, cid), **alice.h})
    assert resp.status_code == 200
    assert len(resp.content) == BIG and resp.content[:256] == bytes(range(256))
    assert "Tunnel" in stack.agent.calls


async def test_traffic_counts_as_activity(stack: Stack, service: int) -> None:
    api = stack.client
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    sandbox = stack.agent.sandboxes[cid]
    sandbox.ports[8000] = ("127.0.0.1", service)
    sandbox.last_active_at = before = time.time() - 3600
    resp = await api.get("/", headers={**host(8000, cid), **alice.h})
    assert resp.status_code == 200
    assert sandbox.last_active_at > before + 3000


async def test_who_may_reach_a_port(stack: Stack, service: int) -> None:
    api = stack.client
    alice, mallory = await new_account(api), await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    stack.agent.sandboxes[cid].ports[8000] = ("127.0.0.1", service)

    assert_error(await api.get("/", headers=host(8000, cid)), 401, "unauthorized")
    bad_key = {"X-API-Key": "wrn_" + "0" * 32}
    assert_error(await api.get("/", headers={**host(8000, cid), **bad_key}), 401, "unauthorized")
    bad_jwt = {"Authorization": "Bearer not-a-token"}
    assert_error(await api.get("/", headers={**host(8000, cid), **bad_jwt}), 401, "unauthorized")
    for creds in (mallory.h, mallory.jwt):
        resp = await api.get("/", headers={**host(8000, cid), **creds})
        assert_error(resp, 404, "not_found")
    unknown = "sb-00000000-0000-4000-8000-000000000000"
    assert_error(await api.get("/", headers={**host(8000, unknown), **alice.h}), 404, "not_found")
    assert stack.agent.calls.count("Tunnel") == 0


async def test_a_closed_port_and_a_paused_capsule_say_so(stack: Stack) -> None:
    api = stack.client
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]

    resp = await api.get("/", headers={**host(8999, cid), **alice.h})
    body = assert_error(resp, 502, "port_unreachable")
    assert body["message"] == "nothing is listening on port 8999 in the capsule"

    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    resp = await api.get("/", headers={**host(8000, cid), **alice.h})
    body = assert_error(resp, 409, "invalid_state")
    assert "paused" in body["message"] and "resume" in body["message"]


async def test_the_proxy_domain_setting(start_app: StartApp, service: int) -> None:
    async with start_app(proxy_domain="apps.example.com:8443") as stack:
        api = stack.client
        alice = await new_account(api)
        cid = (await make_capsule(api, alice))["id"]
        stack.agent.sandboxes[cid].ports[8000] = ("127.0.0.1", service)
        resp = await api.get("/", headers={**host(8000, cid, "apps.example.com:8443"), **alice.h})
        assert resp.status_code == 200 and resp.json()["path"] == "/"
        # Under another domain the name is not a port's: the API answers (an unknown /v1 path).
        resp = await api.get("/v1/nothing", headers={**host(8000, cid), **alice.h})
        assert_error(resp, 404, "not_found")
        assert stack.agent.calls.count("Tunnel") == 1


@pytest.fixture
async def ws_echo() -> AsyncIterator[int]:
    """A WebSocket echo server (wsproto over asyncio): text and binary back as sent; the text
    "close" makes it close with 4001."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        parts: list[Any] = []  # a message's fragments
        try:
            while data := await reader.read(65536):
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        writer.write(ws.send(AcceptConnection()))
                    elif isinstance(event, Message):
                        parts.append(event.data)
                        if not event.message_finished:
                            continue
                        whole = "".join(parts) if isinstance(event.data, str) else b"".join(parts)
                        parts.clear()
                        if whole == "close":
                            writer.write(ws.send(CloseConnection(code=4001, reason="asked")))
                        else:
                            writer.write(ws.send(Message(data=whole)))
                    elif isinstance(event, CloseConnection):
                        writer.write(ws.send(event.response()))
                        return
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def test_websockets_are_carried_both_ways(stack: Stack, ws_echo: int) -> None:
    api = stack.client
    alice, mallory = await new_account(api), await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    stack.agent.sandboxes[cid].ports[9000] = ("127.0.0.1", ws_echo)
    async with stack.ws_client() as http:
        async with httpx_ws.aconnect_ws(
            "/socket", http, headers={**host(9000, cid), **alice.h}
        ) as ws:
            await ws.send_text("hello")
            assert await ws.receive_text() == "hello"
            await ws.send_bytes(b"\x00\x01" * 50_000)
            assert await ws.receive_bytes() == b"\x00\x01" * 50_000
            await ws.send_text("close")
            with pytest.raises(httpx_ws.WebSocketDisconnect) as closed:
                await ws.receive_text()
            assert closed.value.code == 4001
        for headers, status in ((host(9000, cid), 401), ({**host(9000, cid), **mallory.h}, 404)):
            with pytest.raises(httpx_ws.WebSocketUpgradeError) as refused:
                async with httpx_ws.aconnect_ws("/socket", http, headers=headers):
                    pass
            assert refused.value.response.status_code == status
        with pytest.raises(httpx_ws.WebSocketUpgradeError) as refused:
            async with httpx_ws.aconnect_ws("/", http, headers={**host(9001, cid), **alice.h}):
                pass
        assert refused.value.response.status_code == 502


async def test_a_caller_leaving_an_endless_stream_closes_the_tunnel(stack: Stack) -> None:
    """Through uvicorn (the in-process transport buffers whole answers): a server-sent events
    stream that never ends; the caller reads a little and leaves; the service's connection is
    closed soon after, so nothing keeps streaming to no one."""
    closed = asyncio.Event()

    async def events(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"6\r\ndata:\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.02)
        except (ConnectionError, OSError):
            closed.set()
        finally:
            writer.close()

    service = await asyncio.start_server(events, "127.0.0.1", 0)
    api = stack.client
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    stack.agent.sandboxes[cid].ports[8000] = ("127.0.0.1", service.sockets[0].getsockname()[1])
    async with served(stack.app) as base_url:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=30) as http,
            http.stream("GET", "/events", headers={**host(8000, cid), **alice.h}) as resp,
        ):
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "text/event-stream"
            async for chunk in resp.aiter_raw():
                assert chunk.startswith(b"data:")
                break
        await wait_for(closed.is_set, 10, what="the service's connection closed")
    service.close()
