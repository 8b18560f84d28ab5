"""GET /v1/capsules/{id}/ports over the fake agent: a running capsule's listening ports with their
process and their URL through the port proxy (under WRENN_PROXY_DOMAIN, else the host the API
was called at; https when it was), a URL that reaches the port; who may list them (another
team 404, no credentials 401) and when (paused or stopped 409); looking is not activity."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import httpx
import pytest

from ..controlplane.helpers import assert_error
from .conftest import Stack, StartApp
from .helpers import make_capsule, new_account


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


async def test_a_capsules_listening_ports_with_their_urls(stack: Stack, service: int) -> None:
    api = stack.client
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    sandbox = stack.agent.sandboxes[cid]
    sandbox.ports[8000] = ("127.0.0.1", service)
    sandbox.listening[3000] = ("127.0.0.1", 77, "node server.js")
    sandbox.last_active_at = before = time.time() - 3600

    resp = await api.get(f"/v1/capsules/{cid}/ports", headers=alice.h)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "ports": [
            {
                "port": 3000,
                "address": "127.0.0.1",
                "pid": 77,
                "command": "node server.js",
                "url": f"http://3000-{cid}.wrenn.test",
            },
            {
                "port": 8000,
                "address": "0.0.0.0",
                "pid": None,
                "command": None,
                "url": f"http://8000-{cid}.wrenn.test",
            },
        ]
    }
    assert sandbox.last_active_at == before  # a dashboard watching keeps nothing awake

    # The URL reaches the port through the proxy (a resolver would send its host as Host).
    url = httpx.URL(resp.json()["ports"][1]["url"])
    resp = await api.get("/", headers={"Host": url.netloc.decode(), **alice.jwt})
    assert (resp.status_code, resp.text) == (200, "hello")


async def test_urls_under_the_proxy_domain_and_the_callers_scheme(start_app: StartApp) -> None:
    async with start_app(proxy_domain="apps.example.com:8443") as stack:
        api = stack.client
        alice = await new_account(api)
        cid = (await make_capsule(api, alice))["id"]
        stack.agent.sandboxes[cid].listening[5173] = ("::", 12, "vite")
        resp = await api.get(f"https://wrenn.test/v1/capsules/{cid}/ports", headers=alice.jwt)
        assert resp.status_code == 200, resp.text
        assert [p["url"] for p in resp.json()["ports"]] == [
            f"https://5173-{cid}.apps.example.com:8443"
        ]


async def test_who_may_list_a_capsules_ports_and_when(stack: Stack) -> None:
    api = stack.client
    alice, mallory = await new_account(api), await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    stack.agent.sandboxes[cid].listening[8080] = ("0.0.0.0", 5, "server")

    assert_error(await api.get(f"/v1/capsules/{cid}/ports"), 401, "unauthorized")
    for creds in (mallory.h, mallory.jwt):
        assert_error(await api.get(f"/v1/capsules/{cid}/ports", headers=creds), 404, "not_found")
    for unknown in ("sb-00000000-0000-4000-8000-000000000000", "not-an-id"):
        resp = await api.get(f"/v1/capsules/{unknown}/ports", headers=alice.h)
        assert_error(resp, 404, "not_found")
    assert stack.agent.calls.count("ListPorts") == 0

    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    body = assert_error(
        await api.get(f"/v1/capsules/{cid}/ports", headers=alice.h), 409, "invalid_state"
    )
    assert "paused" in body["message"]
    assert (await api.delete(f"/v1/capsules/{cid}", headers=alice.h)).status_code == 204
    resp = await api.get(f"/v1/capsules/{cid}/ports", headers=alice.h)
    assert resp.status_code == 409, resp.text
    assert stack.agent.calls.count("ListPorts") == 0


async def test_a_capsule_that_stopped_behind_the_control_planes_back(stack: Stack) -> None:
    api = stack.client
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    stack.agent.kill(cid)  # its sandbox died: the agent refuses (FAILED_PRECONDITION)
    resp = await api.get(f"/v1/capsules/{cid}/ports", headers=alice.h)
    assert_error(resp, 409, "invalid_state")
    assert stack.agent.calls.count("ListPorts") == 1


async def test_an_agent_without_list_ports_says_so(stack: Stack) -> None:
    api = stack.client
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    stack.agent.faults.fail("ListPorts", grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
    body = assert_error(
        await api.get(f"/v1/capsules/{cid}/ports", headers=alice.h), 502, "agent_error"
    )
    assert body["message"] == (
        "the capsule's host runs an older agent that cannot list ports; update it"
    )
    # Any other failure says nothing of the agent's own message.
    stack.agent.faults.fail("ListPorts", grpc.StatusCode.INTERNAL, "secret internals")
    body = assert_error(
        await api.get(f"/v1/capsules/{cid}/ports", headers=alice.h), 502, "agent_error"
    )
    assert "secret" not in body["message"]
