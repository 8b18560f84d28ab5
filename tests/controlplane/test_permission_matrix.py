"""Authentication across every route of the control plane: each route of the generated OpenAPI
document is called by each kind of caller that must be refused, whatever the route does.

The host agent's routes take no user credentials at all: register and refresh read theirs from
the body, heartbeat from X-Host-Token. They are called like every other route, but with a
well-formed, bogus credential in the body (an empty body would be a 400: the credential is a
required field), and the host token header gets its own test below.

Roles inside a team (member/admin/owner) and cross-team visibility of specific resources are
tested by each area's own tests; this matrix makes sure no route forgets authentication.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

import httpx
import jwt
import pytest
from fastapi import FastAPI

from tests.controlplane.conftest import TEST_JWT_SECRET
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.security import TokenCodec

from .helpers import bearer, signup

# Routes anyone may call.
PUBLIC = ("/health", "/openapi", "/docs", "/v1/auth/signup", "/v1/auth/login", "/v1/auth/oauth",
          "/v1/auth/options", "/v1/auth/activate", "/v1/me/password/reset")  # fmt: skip
# Routes only a user session may call (an API key is refused there too).
JWT_ONLY = ("/v1/me", "/v1/api-keys", "/v1/teams", "/v1/users", "/v1/audit-logs", "/v1/admin",
            "/v1/auth/switch-team", "/v1/hosts")  # fmt: skip
# The agent's routes whose credential is in the body: what they are sent instead of `{}`.
AGENT_BODIES = {
    ("post", "/v1/hosts/register"): {
        "token": "wrh_" + "0" * 64,
        "address": "unix:///run/wrenn/agent.sock",
    },
    ("post", "/v1/hosts/auth/refresh"): {"refresh_token": "wrr_" + "0" * 64},
}
HEARTBEAT = "/v1/hosts/{id}/heartbeat"
PARAM = re.compile(r"\{([^}]+)\}")
SAMPLE = {
    "id": f"sb-{uuid.uuid4()}",
    "uid": f"usr-{uuid.uuid4()}",
    "selector": "1",
    "name": "some-template",
    "provider": "github",
    "tag": "t",
}


def _openapi_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, OpenAPI path) of every route but the public ones."""
    document = app.openapi()
    out = []
    for path, item in document["paths"].items():
        if path.startswith(PUBLIC) or path.startswith("/_test"):
            continue
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((method, path))
    return out


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every non-public route, its parameters filled with samples."""
    return [
        (method, PARAM.sub(lambda m: SAMPLE.get(m.group(1), "x"), path))
        for method, path in _openapi_operations(app)
    ]


def expired_token(user_id: str, team_id: str) -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {
        "sub": user_id,
        "user_id": user_id,
        "team_id": team_id,
        "iat": int((now - dt.timedelta(hours=2)).timestamp()),
        "exp": int((now - dt.timedelta(hours=1)).timestamp()),
    }
    return jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")


async def test_every_route_refuses_callers_without_valid_credentials(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await signup(client)
    key = await client.post("/v1/api-keys", json={"name": "k"}, headers=bearer(user["token"]))
    revoked = key.json()
    await client.delete(f"/v1/api-keys/{revoked['id']}", headers=bearer(user["token"]))
    live_key = (
        await client.post("/v1/api-keys", json={"name": "k2"}, headers=bearer(user["token"]))
    ).json()["key"]
    callers: dict[str, dict[str, str]] = {
        "anonymous": {},
        "revoked API key": {"X-API-Key": revoked["key"]},
        "malformed API key": {"X-API-Key": "wrn_" + "0" * 64},
        "expired JWT": bearer(expired_token(user["user_id"], user["team_id"])),
        "forged JWT": bearer(user["token"][:-4] + "AAAA"),
    }
    checked = 0
    for method, path in routes(app):
        body = AGENT_BODIES.get((method, path), {})
        for caller, headers in callers.items():
            resp = await client.request(method, path, headers=headers, json=body)
            assert resp.status_code == 401, (caller, method, path, resp.status_code, resp.text)
            assert resp.json()["error"]["code"] == "unauthorized"
            checked += 1
        if path.startswith(JWT_ONLY):
            resp = await client.request(method, path, headers={"X-API-Key": live_key}, json=body)
            assert resp.status_code == 401, ("API key", method, path, resp.text)
    assert checked > 100
    assert set(AGENT_BODIES) <= set(routes(app)), "AGENT_BODIES names routes that do not exist"


async def test_heartbeat_refuses_anything_but_a_valid_host_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """No host is registered, so no host token can be valid; user credentials, in either
    header, are never host credentials."""
    assert ("post", HEARTBEAT) in {(m, p) for m, p in _openapi_operations(app)}
    user = await signup(client)
    host_id = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    codec: TokenCodec = app.state.codec
    other_key = TokenCodec("another-secret-" + "y" * 40, dt.timedelta(hours=1))
    host_tokens = {
        "user JWT": user["token"],
        "expired host JWT": codec.issue_host(
            host_id, dt.timedelta(hours=1), now=now - dt.timedelta(hours=2)
        ),
        "host JWT signed with another key": other_key.issue_host(host_id, dt.timedelta(hours=1)),
        "forged host JWT": codec.issue_host(host_id, dt.timedelta(hours=1))[:-4] + "AAAA",
        "API key": "wrn_" + "0" * 64,
        "garbage": "x",
    }
    path = HEARTBEAT.format(id=ids.HOST.format(host_id))
    for caller, token in host_tokens.items():
        resp = await client.post(path, headers={"X-Host-Token": token})
        assert resp.status_code == 401, (caller, resp.status_code, resp.text)
        assert resp.json()["error"]["code"] == "unauthorized"
    for caller, headers in {"no header": {}, "user JWT as Bearer": bearer(user["token"])}.items():
        resp = await client.post(path, headers=headers)
        assert resp.status_code == 401, (caller, resp.status_code, resp.text)


@pytest.mark.parametrize("path", ["/v1/capsules", "/v1/snapshots"])
async def test_team_routes_accept_both_kinds_of_credentials(
    client: httpx.AsyncClient, path: str
) -> None:
    user = await signup(client)
    key = (
        await client.post("/v1/api-keys", json={"name": "k"}, headers=bearer(user["token"]))
    ).json()["key"]
    assert (await client.get(path, headers=bearer(user["token"]))).status_code == 200
    assert (await client.get(path, headers={"X-API-Key": key})).status_code == 200
