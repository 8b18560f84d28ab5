"""Notification channels: `/v1/channels` CRUD and its validation (address checks as for BYOC
hosts), and webhook deliveries of capsule events to a local HTTP receiver (signed, retried after
a 500, the last status on the channel), with the app's leader loop and the fake host agent."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ..threaded_server import serving
from ..waiting import wait_for
from .conftest import StartApp
from .helpers import make_capsule, new_account

LOOPBACK = ["127.0.0.0/8", "::1/128"]
WAIT = 20.0


@dataclass
class Receiver:
    """Answers each POST with the next status of `statuses` (then 200) and keeps it."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self.lock:
            self.received.append((headers, body))
            code = self.statuses.pop(0) if self.statuses else 200
        await send({"type": "http.response.start", "status": code, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    with serving(rec) as url:
        yield rec, url


def _verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    ts = headers["x-wrenn-timestamp"]
    want = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-wrenn-signature"], "sha256=" + want)


async def _until(predicate: Any) -> None:
    await wait_for(predicate, WAIT)


async def _last_status(status: Any, want: str) -> bool:
    return bool((await status())["last_status"] == want)


async def test_crud_and_validation(start_app: StartApp, receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    async with start_app(byoc_allowed_networks=LOOPBACK) as stack:
        c = stack.client
        ada, bob = await new_account(c), await new_account(c)
        body = {
            "name": "ops",
            "provider": "webhook",
            "config": {"url": url + "/hook"},
            "events": ["capsule.created", "capsule.paused"],
        }
        resp = await c.post("/v1/channels", json=body, headers=ada.h)
        assert resp.status_code == 201, resp.text
        made = resp.json()
        assert made["id"].startswith("ch-") and len(made["secret"]) >= 32
        assert made["events"] == ["capsule.created", "capsule.paused"]
        cid = made["id"]
        listed = (await c.get("/v1/channels", headers=ada.jwt)).json()
        assert [x["id"] for x in listed] == [cid] and listed[0]["secret"] is None
        assert (await c.get("/v1/channels", headers=bob.h)).json() == []
        assert (await c.get(f"/v1/channels/{cid}", headers=bob.h)).status_code == 404
        resp = await c.patch(
            f"/v1/channels/{cid}", json={"name": "ops2", "events": ["capsule.destroyed"]},
            headers=ada.h,
        )  # fmt: skip
        assert resp.status_code == 200 and resp.json()["name"] == "ops2", resp.text
        resp = await c.put(
            f"/v1/channels/{cid}/config",
            json={"config": {"url": url + "/new", "secret": "s" * 20}},
            headers=ada.h,
        )
        assert resp.status_code == 200 and resp.json()["secret"] == "s" * 20, resp.text
        got = (await c.get(f"/v1/channels/{cid}", headers=ada.h)).json()
        assert got["url"] == url + "/new" and got["secret"] is None

        bad = [
            ({**body, "name": "ops2"}, 409),
            ({**body, "name": "x", "provider": "slack"}, 400),
            ({**body, "name": "x", "provider": "nope"}, 400),
            ({**body, "name": "x", "events": ["capsule.exploded"]}, 400),
            ({**body, "name": "x", "events": []}, 400),
            ({**body, "name": "x", "config": {"url": "ftp://example.com/"}}, 400),
            ({**body, "name": "x", "config": {}}, 400),
            ({**body, "name": "x", "config": {"url": url, "token": "t"}}, 400),
            ({**body, "name": "x", "config": {"url": "http://169.254.169.254/"}}, 400),
            ({**body, "name": "x", "config": {"url": "http://u:p@example.com/"}}, 400),
        ]
        for payload, code in bad:
            resp = await c.post("/v1/channels", json=payload, headers=ada.h)
            assert resp.status_code == code, (payload, resp.text)
            assert set(resp.json()) == {"error"}
        assert (await c.post("/v1/channels", json=body)).status_code == 401

        resp = await c.delete(f"/v1/channels/{cid}", headers=bob.h)
        assert resp.status_code == 404
        resp = await c.delete(f"/v1/channels/{cid}", headers=ada.h)
        assert resp.status_code == 204
        assert (await c.get(f"/v1/channels/{cid}", headers=ada.h)).status_code == 404

    # Without the operator allowing loopback, a loopback URL is refused.
    async with start_app() as stack:
        ada = await new_account(stack.client)
        resp = await stack.client.post("/v1/channels", json=body, headers=ada.h)
        assert resp.status_code == 400 and "loopback" in resp.json()["error"]["message"]


async def test_delivery_signed_retried_and_status_shown(
    start_app: StartApp, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.statuses = [500]
    settings = {
        "byoc_allowed_networks": LOOPBACK,
        "channel_delivery_interval_sec": 0.1,
        "channel_retry_backoff_sec": 0.05,
        "channel_delivery_attempts": 3,
    }
    async with start_app(**settings) as stack:
        c = stack.client
        ada = await new_account(c)
        body = {
            "name": "hook",
            "provider": "webhook",
            "config": {"url": url + "/hook"},
            "events": ["capsule.created"],
        }
        made = (await c.post("/v1/channels", json=body, headers=ada.h)).json()
        capsule = await make_capsule(c, ada)
        await _until(lambda: len(rec.received) >= 2)
        for headers, raw in rec.received[:2]:
            _verify(made["secret"], headers, raw)
            event = json.loads(raw)
            assert event["event"] == "capsule.create"
            assert event["resource"]["id"] == capsule["id"]

        async def status() -> dict[str, Any]:
            resp = await c.get(f"/v1/channels/{made['id']}", headers=ada.h)
            data: dict[str, Any] = resp.json()
            return data

        await wait_for(lambda: _last_status(status, "success"), WAIT)
        got = await status()
        assert got["last_status"] == "success" and got["last_status_code"] == 200
        # A pause is not an event this channel asked for: nothing more is sent.
        resp = await c.post(f"/v1/capsules/{capsule['id']}/pause", headers=ada.h)
        assert resp.status_code == 200
        # A receiver that keeps failing: attempts stop, the channel says so.
        rec.statuses = [500, 500, 500]
        await make_capsule(c, ada)
        await _until(lambda: len(rec.received) >= 5)
        await wait_for(lambda: _last_status(status, "failed"), WAIT)
        got = await status()
        assert got["last_status_code"] == 500 and "500" in got["last_error"]
        assert len(rec.received) == 5


async def test_test_endpoint(start_app: StartApp, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    async with start_app(byoc_allowed_networks=LOOPBACK) as stack:
        ada = await new_account(stack.client)
        config = {"url": url + "/t", "secret": "t" * 24}
        resp = await stack.client.post(
            "/v1/channels/test", json={"provider": "webhook", "config": config}, headers=ada.h
        )
        assert resp.status_code == 200 and resp.json() == {"status": "ok"}, resp.text
        ((headers, raw),) = rec.received
        _verify("t" * 24, headers, raw)
        assert json.loads(raw)["event"] == "test"
        # A name is dialled at the address that was checked; the receiver sees the name.
        named = url.replace("127.0.0.1", "localhost")
        resp = await stack.client.post(
            "/v1/channels/test",
            json={"provider": "webhook", "config": {**config, "url": named}},
            headers=ada.h,
        )
        assert resp.status_code == 200, resp.text
        assert rec.received[-1][0]["host"] == named.removeprefix("http://")
        rec.statuses = [503]
        resp = await stack.client.post(
            "/v1/channels/test", json={"provider": "webhook", "config": config}, headers=ada.h
        )
        assert resp.status_code == 400 and "503" in resp.json()["error"]["message"]
