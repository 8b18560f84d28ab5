"""API keys: shown once, stored hashed, listed without secrets, usable, revocable, team-private."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import APIKey, AuditLog
from wrenn_server.controlplane.db.session import Database, transaction

from .helpers import assert_error, bearer, signup


async def _create(client: httpx.AsyncClient, token: str, name: str | None = "ci") -> dict[str, Any]:
    payload = {} if name is None else {"name": name}
    resp = await client.post("/v1/api-keys", json=payload, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _rows(db: Database) -> list[APIKey]:
    async with db.sessionmaker() as session, transaction(session):
        return list((await session.scalars(select(APIKey))).all())


async def test_create_shows_plaintext_once_and_stores_only_a_hash(
    client: httpx.AsyncClient, db: Database
) -> None:
    owner = await signup(client)
    created = await _create(client, owner["token"], "deploy bot")
    key = created["key"]
    assert key.startswith("wrn_") and len(key) == 68
    assert created["key_prefix"] == key[:12]
    assert created["name"] == "deploy bot"
    assert created["team_id"] == owner["team_id"]
    assert created["last_used"] is None
    ids.API_KEY.parse(created["id"])

    [row] = await _rows(db)
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    stored = [str(getattr(row, c.key)) for c in APIKey.__table__.columns]
    assert not any(key in value or key[12:] in value for value in stored)

    listed = await client.get("/v1/api-keys", headers=bearer(owner["token"]))
    assert listed.status_code == 200
    [entry] = listed.json()
    assert entry["key"] is None
    assert (entry["id"], entry["name"], entry["key_prefix"]) == (
        created["id"],
        "deploy bot",
        key[:12],
    )
    assert key not in listed.text


async def test_default_name(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    assert (await _create(client, owner["token"], None))["name"] == "Unnamed API Key"
    assert (await _create(client, owner["token"], "  "))["name"] == "Unnamed API Key"
    resp = await client.post(
        "/v1/api-keys", json={"name": "n" * 201}, headers=bearer(owner["token"])
    )
    assert_error(resp, 400, "invalid_request")


async def test_key_authenticates_as_its_team(client: httpx.AsyncClient, db: Database) -> None:
    owner = await signup(client)
    created = await _create(client, owner["token"], "runner")
    resp = await client.get("/_test/whoami", headers={"X-API-Key": created["key"]})
    assert resp.status_code == 200
    assert resp.json() == {
        "kind": "api_key",
        "team_id": owner["team_id"],
        "role": None,
        "actor_type": "api_key",
        "actor_id": created["id"],
        "actor_name": "runner",
    }
    [row] = await _rows(db)
    assert row.last_used is not None
    listed = (await client.get("/v1/api-keys", headers=bearer(owner["token"]))).json()
    assert listed[0]["last_used"] is not None

    # The same dependency takes a user's JWT.
    as_user = await client.get("/_test/whoami", headers=bearer(owner["token"]))
    assert as_user.json()["kind"] == "user" and as_user.json()["role"] == "owner"
    # Account endpoints are for users only.
    assert_error(
        await client.get("/v1/me", headers={"X-API-Key": created["key"]}), 401, "unauthorized"
    )
    assert_error(
        await client.get("/v1/api-keys", headers={"X-API-Key": created["key"]}), 401, "unauthorized"
    )


async def test_unknown_or_malformed_keys_are_refused(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    key = (await _create(client, owner["token"]))["key"]
    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
    for candidate in (wrong, "wrn_short", "", key.upper(), " " + key):
        resp = await client.get("/_test/whoami", headers={"X-API-Key": candidate})
        assert resp.status_code == 401, candidate
        assert_error(resp, 401, "unauthorized")


async def test_revoke(client: httpx.AsyncClient, db: Database) -> None:
    owner = await signup(client)
    created = await _create(client, owner["token"])
    keep = await _create(client, owner["token"], "keep")
    headers = {"X-API-Key": created["key"]}
    assert (await client.get("/_test/whoami", headers=headers)).status_code == 200

    resp = await client.delete(f"/v1/api-keys/{created['id']}", headers=bearer(owner["token"]))
    assert resp.status_code == 204 and resp.content == b""
    assert_error(await client.get("/_test/whoami", headers=headers), 401, "unauthorized")
    listed = (await client.get("/v1/api-keys", headers=bearer(owner["token"]))).json()
    assert [k["id"] for k in listed] == [keep["id"]]
    again = await client.delete(f"/v1/api-keys/{created['id']}", headers=bearer(owner["token"]))
    assert_error(again, 404, "not_found")
    # The other key still works.
    assert (
        await client.get("/_test/whoami", headers={"X-API-Key": keep["key"]})
    ).status_code == 200

    async with db.sessionmaker() as session, transaction(session):
        events = (
            await session.scalars(select(AuditLog).order_by(AuditLog.created_at, AuditLog.action))
        ).all()
    assert [(e.action, e.resource_id) for e in events] == [
        ("create", created["id"]),
        ("create", keep["id"]),
        ("revoke", created["id"]),
    ]
    assert all(e.actor_type == "user" and e.actor_id == owner["user_id"] for e in events)
    assert all(e.team_id == ids.TEAM.parse(owner["team_id"]) for e in events)


async def test_other_teams_keys_are_invisible_and_undeletable(client: httpx.AsyncClient) -> None:
    alice = await signup(client)
    mallory = await signup(client)
    key = await _create(client, alice["token"], "alice's")

    listed = await client.get("/v1/api-keys", headers=bearer(mallory["token"]))
    assert listed.status_code == 200 and listed.json() == []
    resp = await client.delete(f"/v1/api-keys/{key['id']}", headers=bearer(mallory["token"]))
    assert_error(resp, 404, "not_found")
    # Still alive for its owner.
    assert (await client.get("/_test/whoami", headers={"X-API-Key": key["key"]})).status_code == 200
    assert len((await client.get("/v1/api-keys", headers=bearer(alice["token"]))).json()) == 1


async def test_bad_key_ids(client: httpx.AsyncClient) -> None:
    owner = await signup(client)
    for bad in ("nope", f"sb-{ids.new_id()}", "key-1234"):
        resp = await client.delete(f"/v1/api-keys/{bad}", headers=bearer(owner["token"]))
        assert_error(resp, 400, "invalid_request")
    missing = await client.delete(
        f"/v1/api-keys/key-{ids.new_id()}", headers=bearer(owner["token"])
    )
    assert_error(missing, 404, "not_found")
    assert_error(await client.delete(f"/v1/api-keys/key-{ids.new_id()}"), 401, "unauthorized")
