"""Who reaches a real capsule's port through the proxy, through uvicorn: a preview link from the
API is redirected into a host-only cookie that then serves the page of a web server in the
capsule; a capsule made with auto_resume, really paused, is resumed by a request through the
proxy and serves the same page."""

from __future__ import annotations

import httpx
import pytest

from ..waiting import wait_for
from .test_sdk import server  # noqa: F401
from .test_ws import _account

pytestmark = pytest.mark.integration


async def test_a_preview_link_and_auto_resume_with_a_real_capsule(
    server: tuple[str, str],  # noqa: F811
) -> None:
    base_url, _ = server
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as api:
        _token, key = await _account(api, "preview")
        creds = {"X-API-Key": key}
        resp = await api.post("/v1/capsules", json={"auto_resume": True}, headers=creds)
        assert resp.status_code == 201, resp.text
        cid = resp.json()["id"]
        assert resp.json()["auto_resume"] is True
        try:
            resp = await api.post(
                f"/v1/capsules/{cid}/exec",
                json={
                    "cmd": "/bin/sh",
                    "args": ["-c", "mkdir -p /tmp/srv && echo previewed > /tmp/srv/index.html"],
                },
                headers=creds,
            )
            assert resp.status_code == 200 and resp.json()["exit_code"] == 0, resp.text
            resp = await api.post(
                f"/v1/capsules/{cid}/exec",
                json={
                    "cmd": "python3",
                    "args": ["-m", "http.server", "8000", "--directory", "/tmp/srv"],
                    "background": True,
                },
                headers=creds,
            )
            assert resp.status_code == 202, resp.text

            resp = await api.post(
                f"/v1/capsules/{cid}/ports/8000/url", json={"ttl_seconds": 600}, headers=creds
            )
            assert resp.status_code == 200, resp.text
            url = httpx.URL(resp.json()["url"])
            # The API was reached at 127.0.0.1:<port>, and no proxy domain is set: the link is
            # under that address. `*.127.0.0.1` does not resolve, so requests go to the control
            # plane's address with the link's host name, as a resolver would send them.
            assert url.host == f"8000-{cid}.127.0.0.1" and url.port == httpx.URL(base_url).port
            page = {"Host": url.netloc.decode()}

            resp = await api.get(f"/?{url.query.decode()}", headers=page)
            assert resp.status_code == 303, resp.text
            assert resp.headers["location"] == f"http://{url.netloc.decode()}/"
            set_cookie = resp.headers["set-cookie"]
            assert "HttpOnly" in set_cookie and "domain" not in set_cookie.lower()
            browser = {**page, "Cookie": set_cookie.split(";")[0]}
            # httpx files cookies under the address it dialled, not the Host sent: sent by hand.
            api.cookies.clear()

            async def served() -> httpx.Response | None:
                resp = await api.get("/", headers=browser)
                return resp if resp.status_code != 502 else None

            resp = await wait_for(served, 30, interval=0.2, what="the web server listening")
            assert (resp.status_code, resp.text) == (200, "previewed\n")
            assert (await api.get("/", headers=page)).status_code == 401

            resp = await api.post(f"/v1/capsules/{cid}/pause", headers=creds)
            assert resp.status_code == 200 and resp.json()["status"] == "paused", resp.text
            resp = await api.get("/", headers=browser)
            assert (resp.status_code, resp.text) == (200, "previewed\n")
            resp = await api.get(f"/v1/capsules/{cid}", headers=creds)
            assert resp.json()["status"] == "running"
        finally:
            await api.delete(f"/v1/capsules/{cid}", headers=creds)
