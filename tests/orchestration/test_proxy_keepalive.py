"""Kept-alive tunnels of the port proxy, over the fake agent: a request after one that ended
cleanly reuses its tunnel (one Tunnel call, one connection to the app); an app that closes the
connection (at once, while idle, or just as the next request goes out) or cuts a body short
never leaves a broken tunnel behind for the next request; a pause and resume starts afresh."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from wrenn_server.controlplane.services.proxy_pool import TunnelPool

from ..served import served
from ..waiting import wait_for
from .conftest import Stack
from .helpers import Account, make_capsule, new_account
from .test_port_proxy import host

LARGE = 64 * 65536


@dataclass
class App:
    """An HTTP/1.1 app that keeps connections alive unless a path says otherwise:
    `/close` answers with `Connection: close` and closes, `/short` promises 100 bytes and sends
    10, `/idle-close` answers and closes the connection 50 ms later, `/drop-next` answers but
    closes the connection without a word when the next request arrives on it, `/large` answers
    with LARGE bytes."""

    port: int = 0
    connections: int = 0
    requests: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        drop_next = False
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                if drop_next:
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append(path)
                answer = f"{path} {len(body)}".encode()
                if path == "/large":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % LARGE)
                    for _ in range(LARGE // 65536):
                        writer.write(b"L" * 65536)
                        await writer.drain()
                    continue
                if path == "/short":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
                    return
                extra = b"Connection: close\r\n" if path == "/close" else b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(answer), extra, answer)
                )
                await writer.drain()
                if path == "/close":
                    return
                if path == "/idle-close":
                    await asyncio.sleep(0.05)
                    return
                drop_next = path == "/drop-next"
        except ConnectionError:
            pass  # the proxy closed the tunnel
        finally:
            writer.close()


@pytest.fixture
async def app() -> AsyncIterator[App]:
    state = App()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    yield state
    server.close()


async def _setup(stack: Stack, app: App) -> tuple[Account, dict[str, str]]:
    alice = await new_account(stack.client)
    cid = (await make_capsule(stack.client, alice))["id"]
    stack.agent.sandboxes[cid].ports[8000] = ("127.0.0.1", app.port)
    return alice, {**host(8000, cid), **alice.h}


def tunnels(stack: Stack) -> int:
    return stack.agent.calls.count("Tunnel")


def pool(stack: Stack) -> TunnelPool[object]:
    kept: TunnelPool[object] = stack.app.state.proxy_pool
    return kept


async def test_a_second_request_reuses_the_tunnel(stack: Stack, app: App) -> None:
    _, headers = await _setup(stack, app)
    api = stack.client
    for path in ("/one", "/two"):
        resp = await api.get(path, headers=headers)
        assert (resp.status_code, resp.text) == (200, f"{path} 0")
    assert (tunnels(stack), app.connections, len(pool(stack))) == (1, 1, 1)
    # A body both ways, and a request from another caller's connection: the same tunnel.
    resp = await api.post("/three", content=b"z" * 300_000, headers=headers)
    assert (resp.status_code, resp.text) == (200, "/three 300000")
    assert (tunnels(stack), app.connections) == (1, 1)


async def test_a_connection_the_app_closes_is_not_kept(stack: Stack, app: App) -> None:
    _, headers = await _setup(stack, app)
    api = stack.client
    assert (await api.get("/close", headers=headers)).text == "/close 0"
    assert len(pool(stack)) == 0
    assert (await api.get("/after", headers=headers)).text == "/after 0"
    assert (tunnels(stack), app.connections) == (2, 2)

    # Closed while idle in the pool (on the kept tunnel of /after): noticed and dropped, so
    # the next request opens anew.
    assert (await api.get("/idle-close", headers=headers)).text == "/idle-close 0"
    await wait_for(lambda: len(pool(stack)) == 0, 10, what="the closed tunnel dropped")
    assert (await api.get("/again", headers=headers)).text == "/again 0"
    assert (tunnels(stack), app.connections) == (3, 3)


async def test_a_request_meeting_a_closing_connection_is_sent_again(stack: Stack, app: App) -> None:
    """The app closes a kept connection just as the next request arrives on it: a GET is sent
    again on a new tunnel; a POST with a body (which the app may have acted on) is not."""
    _, headers = await _setup(stack, app)
    api = stack.client
    assert (await api.get("/drop-next", headers=headers)).text == "/drop-next 0"
    resp = await api.get("/retried", headers=headers)
    assert (resp.status_code, resp.text) == (200, "/retried 0")
    assert (tunnels(stack), app.connections) == (2, 2)
    assert app.requests == ["/drop-next", "/retried"]

    assert (await api.get("/drop-next", headers=headers)).text == "/drop-next 0"
    resp = await api.post("/not-retried", content=b"data", headers=headers)
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "port_unreachable"
    assert "/not-retried" not in app.requests
    assert (await api.get("/fine", headers=headers)).text == "/fine 0"


async def test_a_body_cut_short_does_not_poison_the_pool(stack: Stack, app: App) -> None:
    """Through uvicorn, so the caller sees the cut as a real client would."""
    _, headers = await _setup(stack, app)
    async with (
        served(stack.app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        assert (await http.get("/first", headers=headers)).text == "/first 0"
        assert len(pool(stack)) == 1
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/short", headers=headers)  # on the kept tunnel
        assert len(pool(stack)) == 0
        resp = await http.get("/next", headers=headers)
        assert (resp.status_code, resp.text) == (200, "/next 0")
    assert (tunnels(stack), app.connections) == (2, 2)


async def test_a_caller_leaving_mid_answer_does_not_keep_the_tunnel(stack: Stack, app: App) -> None:
    _, headers = await _setup(stack, app)
    async with (
        served(stack.app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        async with http.stream("GET", "/large", headers=headers) as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_raw():
                assert chunk.startswith(b"L")
                break  # and gone, most of the answer unread
        resp = await http.get("/next", headers=headers)
        assert (resp.status_code, resp.text) == (200, "/next 0")
    assert (tunnels(stack), app.connections) == (2, 2)


async def test_a_pause_and_resume_starts_afresh(stack: Stack, app: App) -> None:
    alice, headers = await _setup(stack, app)
    api = stack.client
    cid = headers["Host"].split("-", 1)[1].split(".")[0]
    assert (await api.get("/before", headers=headers)).text == "/before 0"
    assert len(pool(stack)) == 1
    for action in ("pause", "resume"):
        resp = await api.post(f"/v1/capsules/{cid}/{action}", headers=alice.h)
        assert resp.status_code == 200, resp.text
    assert (await api.get("/after", headers=headers)).text == "/after 0"
    assert (tunnels(stack), app.connections) == (2, 2)
