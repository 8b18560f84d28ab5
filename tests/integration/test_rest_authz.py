"""Authorization over REST with real capsules: another team's capsule is invisible and
untouchable on every route, and requests without valid credentials are refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane.db.models.capsules import Sandbox
from wrenn_server.controlplane.db.session import Database
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import assert_error, count
from .rest_fixtures import CAPSULE_CALLS, Account, both_dialects, make_capsule, new_account, sh

pytestmark = [pytest.mark.integration, both_dialects]


async def assert_untouched(
    api: httpx.AsyncClient, owner: Account, agent: AgentClient, capsule: dict[str, Any]
) -> None:
    """The capsule is as its owner left it: running, its files and processes intact, nothing
    an intruder's call would have made."""
    cid = capsule["id"]
    resp = await api.get(f"/v1/capsules/{cid}", headers=owner.h)
    assert resp.status_code == 200 and resp.json()["status"] == "running"
    on_agent = await agent.get_sandbox(pb.SandboxRef(sandbox_id=cid))
    assert on_agent.status == pb.SANDBOX_STATUS_RUNNING
    res = await sh(api, owner, cid, "cat /home/wrenn-user/secret /etc/hostname >/dev/null; ls /tmp")
    assert "pwned" not in res["stdout"]
    resp = await api.get(f"/v1/capsules/{cid}/processes", headers=owner.h)
    assert "keeper" in {p["tag"] for p in resp.json()["processes"]}


async def owned_capsule(api: httpx.AsyncClient, owner: Account) -> dict[str, Any]:
    capsule = await make_capsule(api, owner)
    await sh(api, owner, capsule["id"], "echo mine > /home/wrenn-user/secret")
    resp = await api.post(
        f"/v1/capsules/{capsule['id']}/exec",
        json={"cmd": "sleep", "args": ["600"], "background": True, "tag": "keeper"},
        headers=owner.h,
    )
    assert resp.status_code == 202, resp.text
    return capsule


async def test_another_teams_capsule_is_invisible_and_untouchable(
    api: httpx.AsyncClient, agent: AgentClient
) -> None:
    owner, intruder = await new_account(api), await new_account(api)
    capsule = await owned_capsule(api, owner)
    cid = capsule["id"]
    # With the intruder's API key and with their user session alike.
    for headers in (intruder.h, intruder.jwt):
        for call in CAPSULE_CALLS:
            resp = await call.send(api, cid, headers)
            assert_error(resp, 404, "not_found")
        # Also the keeper's pid, as a process selector, and the tag.
        for selector in ("keeper", "1"):
            resp = await api.delete(f"/v1/capsules/{cid}/processes/{selector}", headers=headers)
            assert_error(resp, 404, "not_found")
        resp = await api.get("/v1/capsules", headers=headers)
        assert resp.status_code == 200 and resp.json() == []
        resp = await api.post("/v1/snapshots", json={"sandbox_id": cid}, headers=headers)
        assert_error(resp, 404, "not_found")
    await assert_untouched(api, owner, agent, capsule)
    # The owner's user session sees it too (JWT and API key are the same team).
    resp = await api.get("/v1/capsules", headers=owner.jwt)
    assert [c["id"] for c in resp.json()] == [cid]


async def test_requests_without_valid_credentials_are_unauthorized(
    api: httpx.AsyncClient, agent: AgentClient, rest_db: Database
) -> None:
    owner = await new_account(api)
    capsule = await owned_capsule(api, owner)
    cid = capsule["id"]

    # A second key of the team, revoked.
    resp = await api.post("/v1/api-keys", json={"name": "leaked"}, headers=owner.jwt)
    assert resp.status_code == 201
    revoked = resp.json()
    revoked_h = {"X-API-Key": revoked["key"]}
    assert (await api.get(f"/v1/capsules/{cid}", headers=revoked_h)).status_code == 200
    resp = await api.delete(f"/v1/api-keys/{revoked['id']}", headers=owner.jwt)
    assert resp.status_code == 204

    bad_credentials: list[dict[str, str]] = [
        {},
        revoked_h,
        {"X-API-Key": "wrn_" + "0" * 40},
        {"X-API-Key": ""},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Basic {owner.token}"},
        # A key that fails wins over a valid session: the key is what the caller chose.
        revoked_h | owner.jwt,
    ]
    for headers in bad_credentials:
        for call in CAPSULE_CALLS:
            resp = await call.send(api, cid, headers)
            assert_error(resp, 401, "unauthorized")
        for method, path, body in [
            ("GET", "/v1/capsules", None),
            ("POST", "/v1/capsules", {}),
            ("GET", "/v1/snapshots", None),
            ("POST", "/v1/snapshots", {"sandbox_id": cid}),
            ("DELETE", "/v1/snapshots/minimal", None),
        ]:
            resp = await api.request(method, path, json=body, headers=headers)
            assert_error(resp, 401, "unauthorized")
    assert await count(rest_db, Sandbox) == 1
    await assert_untouched(api, owner, agent, capsule)
    # The team's other key still works.
    assert (await api.get(f"/v1/capsules/{cid}", headers=owner.h)).status_code == 200
