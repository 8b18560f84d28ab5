"""Who may reach a capsule's port through the port proxy, over the fake agent: API keys and JWTs
(a member of several teams reaches every team's capsules), preview links (minted by the API,
turned into a host-only cookie by a redirect; expired, tampered and misdirected tokens refused,
never usable as a login), public ports, an app's hostile Set-Cookie, and paused capsules with
and without auto_resume."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx_ws
import pytest

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.security import PreviewGrant, TokenCodec

from ..controlplane.helpers import assert_error
from .conftest import Stack
from .helpers import Account, capsule_status, make_capsule, new_account
from .test_port_proxy import host, ws_echo  # noqa: F401

HOSTILE_COOKIES = (
    "planted=1; Domain=wrenn.test; Path=/; HttpOnly",
    "wrenn_preview=forged; Path=/",
    "own=2; Path=/; domain=.wrenn.test; Secure",
    "plain=3",
)


class Echo(BaseHTTPRequestHandler):
    """Answers with the path and headers it received; /cookies sets hostile cookies."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        data = json.dumps(
            {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
        ).encode()
        self.send_response(200)
        if self.path == "/cookies":
            for cookie in HOSTILE_COOKIES:
                self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


async def capsule_with_port(
    stack: Stack, owner: Account, port: int, local: int, **body: object
) -> str:
    cid = str((await make_capsule(stack.client, owner, **body))["id"])
    stack.agent.sandboxes[cid].ports[port] = ("127.0.0.1", local)
    return cid


async def preview_url(stack: Stack, account: Account, cid: str, port: int, **body: object) -> str:
    resp = await stack.client.post(
        f"/v1/capsules/{cid}/ports/{port}/url", json=body or None, headers=account.h
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["url"])


def codec_of(stack: Stack) -> TokenCodec:
    codec: TokenCodec = stack.app.state.codec
    return codec


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"wrenn_preview={token}"}


async def test_a_member_of_two_teams_reaches_the_capsules_of_both(stack: Stack, echo: int) -> None:
    api = stack.client
    alice, bob = await new_account(api), await new_account(api)
    cid = await capsule_with_port(stack, bob, 8000, echo)
    # Alice's JWT has her own team active; Bob's capsule is not hers yet.
    assert_error(await api.get("/", headers={**host(8000, cid), **alice.jwt}), 404, "not_found")

    resp = await api.post(
        f"/v1/teams/{bob.team_id}/members", json={"email": alice.email}, headers=bob.jwt
    )
    assert resp.status_code == 201, resp.text
    uid = resp.json()["user_id"]
    resp = await api.get("/", headers={**host(8000, cid), **alice.jwt})
    assert resp.status_code == 200, resp.text
    assert "authorization" not in resp.json()["headers"]
    # Her team's API key is still her team's only.
    assert_error(await api.get("/", headers={**host(8000, cid), **alice.h}), 404, "not_found")

    resp = await api.delete(f"/v1/teams/{bob.team_id}/members/{uid}", headers=bob.jwt)
    assert resp.status_code == 204, resp.text
    assert_error(await api.get("/", headers={**host(8000, cid), **alice.jwt}), 404, "not_found")


async def test_a_preview_link_becomes_a_host_only_cookie(stack: Stack, echo: int) -> None:
    api = stack.client
    alice, mallory = await new_account(api), await new_account(api)
    cid = await capsule_with_port(stack, alice, 8000, echo)

    before = dt.datetime.now(dt.UTC)
    resp = await api.post(f"/v1/capsules/{cid}/ports/8000/url", headers=alice.h)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["port"] == 8000
    expires = dt.datetime.fromisoformat(body["expires_at"])
    assert dt.timedelta(seconds=3590) < expires - before < dt.timedelta(seconds=3610)
    url = urlsplit(body["url"])
    assert (url.scheme, url.netloc, url.path) == ("http", f"8000-{cid}.wrenn.test", "/")
    assert url.query.startswith("wrenn_preview=")
    token = url.query.removeprefix("wrenn_preview=")

    # The link: the token checked, kept as a cookie of this host only, and the browser sent to
    # the same address without it (other parameters kept).
    resp = await api.get(f"http://{url.netloc}/app?x=1&wrenn_preview={token}&y=2")
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == f"http://{url.netloc}/app?x=1&y=2"
    assert resp.headers["cache-control"] == "no-store"
    set_cookie = resp.headers["set-cookie"]
    attributes = [a.strip() for a in set_cookie.split(";")]
    assert attributes[0] == f"wrenn_preview={token}"
    assert {"Path=/", "HttpOnly", "SameSite=Lax"} <= set(attributes)
    assert not any(a.lower().startswith(("domain", "secure")) for a in attributes)
    max_age = int(next(a for a in attributes if a.startswith("Max-Age=")).split("=")[1])
    assert 3500 < max_age <= 3600
    assert stack.agent.calls.count("Tunnel") == 0  # nothing was forwarded

    # The cookie opens the port; it never reaches the app, the app's own cookies do.
    resp = await api.get(
        "/app?x=1", headers={**host(8000, cid), "Cookie": f"a=1; wrenn_preview={token}; b=2"}
    )
    assert resp.status_code == 200, resp.text
    seen = resp.json()
    assert seen["path"] == "/app?x=1"
    assert seen["headers"]["cookie"] == "a=1; b=2"
    resp = await api.get("/", headers={**host(8000, cid), **cookie(token)})
    assert resp.status_code == 200 and "cookie" not in resp.json()["headers"]

    # Minted with a JWT and a lifetime of its own; over https the cookie is Secure.
    resp = await api.post(
        f"/v1/capsules/{cid}/ports/8000/url", json={"ttl_seconds": 120}, headers=alice.jwt
    )
    assert resp.status_code == 200, resp.text
    token = resp.json()["url"].split("wrenn_preview=")[1]
    resp = await api.get(f"https://8000-{cid}.wrenn.test/?wrenn_preview={token}")
    assert resp.status_code == 303
    assert resp.headers["location"] == f"https://8000-{cid}.wrenn.test/"
    attributes = [a.strip() for a in resp.headers["set-cookie"].split(";")]
    assert "Secure" in attributes
    assert 60 < int(next(a for a in attributes if a.startswith("Max-Age=")).split("=")[1]) <= 120

    # Minting: the team's capsules only, valid ports and lifetimes, credentials needed.
    assert_error(await api.post(f"/v1/capsules/{cid}/ports/8000/url"), 401, "unauthorized")
    resp = await api.post(f"/v1/capsules/{cid}/ports/8000/url", headers=mallory.h)
    assert_error(resp, 404, "not_found")
    for port in (0, 65536):
        resp = await api.post(f"/v1/capsules/{cid}/ports/{port}/url", headers=alice.h)
        assert_error(resp, 400, "invalid_request")
    for ttl in (0, 59, 24 * 3600 + 1, "soon"):
        resp = await api.post(
            f"/v1/capsules/{cid}/ports/8000/url", json={"ttl_seconds": ttl}, headers=alice.h
        )
        assert_error(resp, 400, "invalid_request")


async def test_a_preview_cookie_opens_websockets(stack: Stack, ws_echo: int) -> None:  # noqa: F811
    alice = await new_account(stack.client)
    cid = await capsule_with_port(stack, alice, 9000, ws_echo)
    token = (await preview_url(stack, alice, cid, 9000)).split("wrenn_preview=")[1]
    async with stack.ws_client() as http:
        async with httpx_ws.aconnect_ws(
            "/socket", http, headers={**host(9000, cid), **cookie(token)}
        ) as ws:
            await ws.send_text("hello")
            assert await ws.receive_text() == "hello"
        # A socket cannot follow a redirect: the link's parameter itself is taken.
        async with httpx_ws.aconnect_ws(
            f"/socket?wrenn_preview={token}", http, headers=host(9000, cid)
        ) as ws:
            await ws.send_bytes(b"\x01\x02")
            assert await ws.receive_bytes() == b"\x01\x02"
        with pytest.raises(httpx_ws.WebSocketUpgradeError) as refused:
            async with httpx_ws.aconnect_ws("/socket", http, headers=host(9000, cid)):
                pass
        assert refused.value.response.status_code == 401


async def test_bad_preview_tokens_are_refused(stack: Stack, echo: int) -> None:
    api = stack.client
    alice, mallory = await new_account(api), await new_account(api)
    cid = await capsule_with_port(stack, alice, 8000, echo)
    other = await capsule_with_port(stack, alice, 8000, echo)
    token = (await preview_url(stack, alice, cid, 8000)).split("wrenn_preview=")[1]
    codec = codec_of(stack)
    sandbox_id = ids.SANDBOX.parse(cid)
    team_id = ids.TEAM.parse(alice.team_id)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    expired, _ = codec.issue_preview(
        PreviewGrant(sandbox_id, 8000, team_id, f"usr-{uuid.uuid4()}"),
        dt.timedelta(hours=1),
        now=long_ago,
    )
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"

    cases = {
        "expired": (expired, 8000, cid, "expired"),
        "tampered": (tampered, 8000, cid, "invalid preview token"),
        "another port's": (token, 8001, cid, "another capsule or port"),
        "another capsule's": (token, 8000, other, "another capsule or port"),
        "a login token": (alice.token, 8000, cid, "invalid preview token"),
        "an API key": (alice.key, 8000, cid, "invalid preview token"),
    }
    for what, (bad, port, capsule, message) in cases.items():
        for resp in (
            await api.get(f"/?wrenn_preview={bad}", headers=host(port, capsule)),
            await api.get("/", headers={**host(port, capsule), **cookie(bad)}),
        ):
            body = assert_error(resp, 401, "unauthorized")
            assert message in body["message"], (what, body)
            assert "set-cookie" not in resp.headers

    # Signed for the capsule but for another team (the capsule is not that team's): not found.
    forged, _ = codec.issue_preview(
        PreviewGrant(sandbox_id, 8000, ids.TEAM.parse(mallory.team_id), f"usr-{uuid.uuid4()}"),
        dt.timedelta(hours=1),
    )
    assert_error(
        await api.get(f"/?wrenn_preview={forged}", headers=host(8000, cid)), 404, "not_found"
    )
    assert_error(
        await api.get("/", headers={**host(8000, cid), **cookie(forged)}), 404, "not_found"
    )
    assert stack.agent.calls.count("Tunnel") == 0
    # The good token does open the port it was made for.
    assert (await api.get("/", headers={**host(8000, cid), **cookie(token)})).status_code == 200


async def test_a_preview_link_ends_with_its_makers_access(stack: Stack, echo: int) -> None:
    """A link made with an API key stops when the key is revoked; one made by a member stops
    when the member is removed from the team."""
    api = stack.client
    alice, bob = await new_account(api), await new_account(api)
    cid = await capsule_with_port(stack, bob, 8000, echo)
    by_key = (await preview_url(stack, bob, cid, 8000)).split("wrenn_preview=")[1]
    assert (await api.get("/", headers={**host(8000, cid), **cookie(by_key)})).status_code == 200
    keys = (await api.get("/v1/api-keys", headers=bob.jwt)).json()
    key_id = next(k["id"] for k in keys if bob.key.startswith(k["key_prefix"]))
    assert (await api.delete(f"/v1/api-keys/{key_id}", headers=bob.jwt)).status_code == 204
    for resp in (
        await api.get("/", headers={**host(8000, cid), **cookie(by_key)}),
        await api.get(f"/?wrenn_preview={by_key}", headers=host(8000, cid)),
    ):
        body = assert_error(resp, 401, "unauthorized")
        assert "no longer valid" in body["message"]

    resp = await api.post(
        f"/v1/teams/{bob.team_id}/members", json={"email": alice.email}, headers=bob.jwt
    )
    assert resp.status_code == 201, resp.text
    uid = resp.json()["user_id"]
    resp = await api.post("/v1/auth/switch-team", json={"team_id": bob.team_id}, headers=alice.jwt)
    assert resp.status_code == 200, resp.text
    in_bobs_team = {"Authorization": f"Bearer {resp.json()['token']}"}
    resp = await api.post(f"/v1/capsules/{cid}/ports/8000/url", headers=in_bobs_team)
    assert resp.status_code == 200, resp.text
    by_alice = resp.json()["url"].split("wrenn_preview=")[1]
    assert (await api.get("/", headers={**host(8000, cid), **cookie(by_alice)})).status_code == 200
    resp = await api.delete(f"/v1/teams/{bob.team_id}/members/{uid}", headers=bob.jwt)
    assert resp.status_code == 204, resp.text
    resp = await api.get("/", headers={**host(8000, cid), **cookie(by_alice)})
    assert_error(resp, 401, "unauthorized")


async def test_a_preview_token_is_never_a_login(stack: Stack, echo: int) -> None:
    api = stack.client
    alice = await new_account(api)
    cid = await capsule_with_port(stack, alice, 8000, echo)
    token = (await preview_url(stack, alice, cid, 8000)).split("wrenn_preview=")[1]
    as_bearer = {"Authorization": f"Bearer {token}"}
    assert_error(await api.get("/v1/capsules", headers=as_bearer), 401, "unauthorized")
    assert_error(await api.get("/v1/me", headers=as_bearer), 401, "unauthorized")
    assert_error(await api.get("/v1/capsules", headers={"X-API-Key": token}), 401, "unauthorized")
    resp = await api.get("/", headers={**host(8000, cid), **as_bearer})
    assert_error(resp, 401, "unauthorized")
    assert stack.agent.calls.count("Tunnel") == 0


async def test_public_ports_need_no_credentials(stack: Stack, echo: int) -> None:
    api = stack.client
    alice, mallory = await new_account(api), await new_account(api)
    created = await make_capsule(api, alice, public_ports=[8000, 3000, 8000])
    cid = created["id"]
    assert created["public_ports"] == [3000, 8000] and created["auto_resume"] is False
    sandbox = stack.agent.sandboxes[cid]
    sandbox.ports[8000] = sandbox.ports[8001] = ("127.0.0.1", echo)

    resp = await api.get("/open", headers=host(8000, cid))
    assert resp.status_code == 200 and resp.json()["path"] == "/open"
    assert_error(await api.get("/", headers=host(8001, cid)), 401, "unauthorized")
    # Credentials are neither needed nor passed on, whoever's they are.
    for creds in (alice.h, alice.jwt, mallory.h, mallory.jwt):
        resp = await api.get("/", headers={**host(8000, cid), **creds})
        assert resp.status_code == 200, resp.text
        seen = resp.json()["headers"]
        assert "x-api-key" not in seen and "authorization" not in seen
    # Nor any other token the platform signed (a preview token for another port, here).
    preview = (await preview_url(stack, alice, cid, 8001)).split("wrenn_preview=")[1]
    resp = await api.get("/", headers={**host(8000, cid), "Authorization": f"Bearer {preview}"})
    assert resp.status_code == 200 and "authorization" not in resp.json()["headers"]
    # The app's own Authorization header (not a token of the platform) is the app's business.
    resp = await api.get("/", headers={**host(8000, cid), "Authorization": "Bearer app-own"})
    assert resp.json()["headers"]["authorization"] == "Bearer app-own"

    resp = await api.patch(f"/v1/capsules/{cid}", json={"public_ports": [8001]}, headers=alice.h)
    assert resp.status_code == 200, resp.text
    assert resp.json()["public_ports"] == [8001] and resp.json()["auto_resume"] is False
    assert (await api.get("/", headers=host(8001, cid))).status_code == 200
    assert_error(await api.get("/", headers=host(8000, cid)), 401, "unauthorized")
    resp = await api.get(f"/v1/capsules/{cid}", headers=alice.h)
    assert resp.json()["public_ports"] == [8001]

    resp = await api.patch(f"/v1/capsules/{cid}", json={"public_ports": []}, headers=alice.jwt)
    assert resp.status_code == 200 and resp.json()["public_ports"] == []
    assert_error(await api.get("/", headers=host(8001, cid)), 401, "unauthorized")

    # Only the team changes it; ports are checked.
    resp = await api.patch(f"/v1/capsules/{cid}", json={"public_ports": [80]}, headers=mallory.h)
    assert_error(resp, 404, "not_found")
    assert_error(
        await api.patch(f"/v1/capsules/{cid}", json={"public_ports": [80]}), 401, "unauthorized"
    )
    for bad in ([0], [65536], ["x"], list(range(1, 34)), 8000):
        resp = await api.patch(f"/v1/capsules/{cid}", json={"public_ports": bad}, headers=alice.h)
        assert_error(resp, 400, "invalid_request")
        resp = await api.post("/v1/capsules", json={"public_ports": bad}, headers=alice.h)
        assert_error(resp, 400, "invalid_request")
    resp = await api.get(f"/v1/capsules/{cid}", headers=alice.h)
    assert resp.json()["public_ports"] == []


async def test_an_apps_cookies_stay_on_its_host(stack: Stack, echo: int) -> None:
    """A capsule's app may set cookies for its own host only: a Domain attribute (which would
    plant them on the dashboard or other capsules under the same parent domain) is dropped, and
    a cookie named like the preview cookie is not set at all."""
    alice = await new_account(stack.client)
    cid = await capsule_with_port(stack, alice, 8000, echo)
    resp = await stack.client.get("/cookies", headers={**host(8000, cid), **alice.h})
    assert resp.status_code == 200
    cookies = resp.headers.get_list("set-cookie")
    assert cookies == ["planted=1; Path=/; HttpOnly", "own=2; Path=/; Secure", "plain=3"]


async def test_a_paused_capsule_without_auto_resume_is_a_conflict(stack: Stack, echo: int) -> None:
    api = stack.client
    alice = await new_account(api)
    cid = await capsule_with_port(stack, alice, 8000, echo)
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    body = assert_error(
        await api.get("/", headers={**host(8000, cid), **alice.h}), 409, "invalid_state"
    )
    assert "paused" in body["message"] and "auto_resume" in body["message"]
    assert "ResumeSandbox" not in stack.agent.calls
    assert await capsule_status(api, alice, cid) == "paused"


async def test_auto_resume_resumes_once_for_requests_arriving_together(
    stack: Stack, echo: int
) -> None:
    api = stack.client
    alice = await new_account(api)
    created = await make_capsule(api, alice, auto_resume=True)
    cid = created["id"]
    assert created["auto_resume"] is True
    stack.agent.sandboxes[cid].ports[8000] = ("127.0.0.1", echo)
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200

    hold = stack.agent.faults.hold("ResumeSandbox")
    requests = [
        asyncio.create_task(api.get(f"/{n}", headers={**host(8000, cid), **alice.h}))
        for n in range(6)
    ]
    await asyncio.wait_for(hold.arrived.wait(), 10)
    assert not any(r.done() for r in requests)  # they wait for the capsule
    hold.release()
    answers = await asyncio.gather(*requests)
    assert [r.status_code for r in answers] == [200] * 6
    assert sorted(r.json()["path"] for r in answers) == [f"/{n}" for n in range(6)]
    assert stack.agent.calls.count("ResumeSandbox") == 1
    assert await capsule_status(api, alice, cid) == "running"


async def test_auto_resume_set_later_and_over_websockets(
    stack: Stack,
    ws_echo: int,  # noqa: F811
) -> None:
    api = stack.client
    alice = await new_account(api)
    cid = await capsule_with_port(stack, alice, 9000, ws_echo)
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    resp = await api.patch(f"/v1/capsules/{cid}", json={"auto_resume": True}, headers=alice.h)
    assert resp.status_code == 200, resp.text
    assert resp.json()["auto_resume"] is True and resp.json()["status"] == "paused"
    async with stack.ws_client() as http:
        async with httpx_ws.aconnect_ws("/", http, headers={**host(9000, cid), **alice.h}) as ws:
            await ws.send_text("awake?")
            assert await ws.receive_text() == "awake?"
    assert await capsule_status(api, alice, cid) == "running"

    resp = await api.patch(f"/v1/capsules/{cid}", json={"auto_resume": False}, headers=alice.h)
    assert resp.json()["auto_resume"] is False
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    assert_error(await api.get("/", headers={**host(9000, cid), **alice.h}), 409, "invalid_state")


async def test_a_public_port_of_a_paused_capsule_resumes_it(stack: Stack, echo: int) -> None:
    """Nobody's credentials: the resume is the platform's, audited as the port proxy."""
    api = stack.client
    alice = await new_account(api)
    cid = await capsule_with_port(stack, alice, 8000, echo, public_ports=[8000], auto_resume=True)
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    resp = await api.get("/", headers=host(8000, cid))
    assert resp.status_code == 200, resp.text
    resp = await api.get("/v1/audit-logs", headers=alice.jwt)
    assert resp.status_code == 200, resp.text
    resumes = [e for e in resp.json()["items"] if e["action"] == "resume"]
    assert resumes and resumes[0]["actor"]["name"] == "port proxy"


async def test_no_credentials_unknown_capsule(stack: Stack) -> None:
    unknown = "sb-00000000-0000-4000-8000-000000000000"
    assert_error(await stack.client.get("/", headers=host(8000, unknown)), 401, "unauthorized")
    resp = await stack.client.get("/?wrenn_preview=x", headers=host(8000, unknown))
    assert_error(resp, 401, "unauthorized")
