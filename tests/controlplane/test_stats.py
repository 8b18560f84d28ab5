"""Team capsule statistics, usage, per-capsule metrics, and the /v1/sandboxes aliases."""

from __future__ import annotations

import uuid

import httpx

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models.capsules import Sandbox
from wrenn_server.controlplane.db.session import Database, transaction

from .helpers import assert_error, bearer, signup


async def add_capsule(db: Database, team_id: str, status: str, vcpus: int, memory_mb: int) -> str:
    sandbox = Sandbox(
        id=uuid.uuid4(),
        team_id=ids.TEAM.parse(team_id),
        template="minimal",
        status=status,
        vcpus=vcpus,
        memory_mb=memory_mb,
    )
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(sandbox)
    return ids.SANDBOX.format(sandbox.id)


async def test_stats_count_running_and_starting_only(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await signup(client)
    auth = bearer(user["token"])
    empty = (await client.get("/v1/capsules/stats", headers=auth)).json()
    assert empty["current"]["running_count"] == 0 and empty["range"] == "1h"
    await add_capsule(db, user["team_id"], "running", 2, 1024)
    await add_capsule(db, user["team_id"], "starting", 1, 512)
    await add_capsule(db, user["team_id"], "paused", 4, 4096)
    other = await signup(client)
    await add_capsule(db, other["team_id"], "running", 8, 8192)
    resp = await client.get("/v1/capsules/stats", params={"range": "24h"}, headers=auth)
    body = resp.json()
    assert body["current"]["running_count"] == 1
    assert body["current"]["vcpus_reserved"] == 3
    assert body["current"]["memory_mb_reserved"] == 1536
    assert body["peaks"]["vcpus"] >= 3
    assert set(body["series"]) == {"labels", "running", "vcpus", "memory_mb"}
    assert_error(
        await client.get("/v1/capsules/stats", params={"range": "2y"}, headers=auth),
        400,
        "invalid_request",
    )


async def test_usage_and_metrics(client: httpx.AsyncClient, db: Database) -> None:
    user = await signup(client)
    auth = bearer(user["token"])
    usage = await client.get("/v1/capsules/usage", params={"from": "2026-01-01"}, headers=auth)
    assert usage.status_code == 200 and usage.json()["from"] == "2026-01-01"
    running = await add_capsule(db, user["team_id"], "running", 1, 512)
    stopped = await add_capsule(db, user["team_id"], "stopped", 1, 512)
    metrics = await client.get(f"/v1/capsules/{running}/metrics", headers=auth)
    assert metrics.status_code == 200 and metrics.json()["points"] == []
    assert_error(
        await client.get(f"/v1/capsules/{stopped}/metrics", headers=auth), 404, "not_found"
    )
    other = await signup(client)
    assert_error(
        await client.get(f"/v1/capsules/{running}/metrics", headers=bearer(other["token"])),
        404,
        "not_found",
    )


async def test_sandboxes_paths_are_aliases(client: httpx.AsyncClient, db: Database) -> None:
    user = await signup(client)
    auth = bearer(user["token"])
    capsule = await add_capsule(db, user["team_id"], "paused", 1, 512)
    listed = await client.get("/v1/sandboxes", headers=auth)
    assert listed.status_code == 200 and [c["id"] for c in listed.json()] == [capsule]
    one = await client.get(f"/v1/sandboxes/{capsule}", headers=auth)
    assert one.status_code == 200 and one.json()["status"] == "paused"
    assert (await client.get("/v1/sandboxesx", headers=auth)).status_code == 404
