"""Keep-alive to a real capsule's service through the port proxy: requests one after the other
arrive on the same connection inside the capsule (the service sees one peer port), a service's
`Connection: close` makes the next request use a new one, and after a pause and resume the
first request gets a fresh connection instead of one from before the pause."""

from __future__ import annotations

import httpx
import pytest

from ..waiting import wait_for
from .test_sdk import server  # noqa: F401

pytestmark = pytest.mark.integration

# An HTTP/1.1 service answering with the peer port of the connection the request came on.
PEER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = str(self.client_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", 8000), H).serve_forever()
"""


async def test_requests_share_a_connection_to_the_service(
    server: tuple[str, str],  # noqa: F811
) -> None:
    base_url, key = server
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers={"X-API-Key": key}) as http:
        resp = await http.post("/v1/capsules", json={})
        assert resp.status_code == 201, resp.text
        cid = resp.json()["id"]
        try:
            started = await http.post(
                f"/v1/capsules/{cid}/exec",
                json={"cmd": "python3", "args": ["-c", PEER], "background": True},
            )
            assert started.status_code < 300, started.text
            proxied = {"Host": f"8000-{cid}.localhost"}

            async def peer(path: str = "/") -> str:
                resp = await http.get(path, headers=proxied)
                assert resp.status_code == 200, resp.text
                return resp.text

            async def listening() -> bool:
                return (await http.get("/", headers=proxied)).status_code == 200

            await wait_for(listening, 30, what="the service listening")
            first = await peer()
            assert [await peer() for _ in range(3)] == [first] * 3
            assert await peer("/close") == first  # answered, then closed by the service
            second = await peer()
            assert second != first
            assert await peer() == second

            for action in ("pause", "resume"):
                resp = await http.post(f"/v1/capsules/{cid}/{action}")
                assert resp.status_code == 200, resp.text
            third = await peer()
            assert third != second
            assert await peer() == third
        finally:
            await http.delete(f"/v1/capsules/{cid}")
