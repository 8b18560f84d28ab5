"""Authentication across every route of the control plane: each route of the generated OpenAPI
document is called by each kind of caller that must be refused, whatever the route does.

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

from .helpers import bearer, signup

# Routes anyone may call.
PUBLIC = ("/health", "/openapi", "/docs", "/v1/auth/signup", "/v1/auth/login", "/v1/auth/oauth")
# Routes only a user session may call (an API key is refused there too).
JWT_ONLY = ("/v1/me", "/v1/api-keys", "/v1/teams", "/v1/users", "/v1/audit-logs", "/v1/admin",
            "/v1/auth/switch-team")  # fmt: skip
PARAM = re.compile(r"\{([^}]+)\}")
SAMPLE = {
    "id": f"sb-{uuid.uuid4()}",
    "uid": f"usr-{uuid.uuid4()}",
    "selector": "1",
    "name": "some-template",
    "provider": "github",
    "tag": "t",
}


def routes(app: FastAPI) -> list[tuple[str, str]]:
    document = app.openapi()
    out = []
    for path, item in document["paths"].items():
        if path.startswith(PUBLIC) or path.startswith("/_test"):
            continue
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((method, PARAM.sub(lambda m: SAMPLE.get(m.group(1), "x"), path)))
    return out


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
        for caller, headers in callers.items():
            resp = await client.request(method, path, headers=headers, json={})
            assert resp.status_code == 401, (caller, method, path, resp.status_code, resp.text)
            assert resp.json()["error"]["code"] == "unauthorized"
            checked += 1
        if path.startswith(JWT_ONLY):
            resp = await client.request(method, path, headers={"X-API-Key": live_key}, json={})
            assert resp.status_code == 401, ("API key", method, path, resp.text)
    assert checked > 100


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
