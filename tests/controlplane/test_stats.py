"""Team capsule statistics, usage, per-capsule metrics, and the /v1/sandboxes aliases."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models.capsules import (
    Sandbox,
    SandboxMetric,
    SandboxMetricsSnapshot,
)
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.services import stats

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


async def _sample(db: Database, at: dt.datetime) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        await stats.sample_teams(session, now=at)


async def test_sampler_feeds_series_peaks_and_usage(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await signup(client)
    auth = bearer(user["token"])
    team = ids.TEAM.parse(user["team_id"])
    await add_capsule(db, user["team_id"], "running", 2, 1024)
    await add_capsule(db, user["team_id"], "paused", 4, 4096)
    await add_capsule(db, user["team_id"], "stopped", 8, 8192)
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    noon = dt.time(12, tzinfo=dt.UTC)
    await _sample(db, now - dt.timedelta(minutes=3))
    for days_ago in (3, 2):  # usage only: long before the 5-minute series
        await _sample(db, dt.datetime.combine(today - dt.timedelta(days=days_ago), noon))
    await _sample(db, now - dt.timedelta(days=61))  # past the retention
    async with db.sessionmaker() as session:
        rows = list(await session.scalars(select(SandboxMetricsSnapshot)))
    assert {(r.team_id, r.running_count, r.paused_count, r.vcpus_reserved) for r in rows} == {
        (team, 1, 1, 2)  # paused capsules hold no CPU; stopped ones count for nothing
    }
    async with db.sessionmaker() as session, transaction(session, write=True):
        await stats.purge_snapshots(session, before=now - dt.timedelta(days=60))
        assert len(list(await session.scalars(select(SandboxMetricsSnapshot)))) == 3

    body = (await client.get("/v1/capsules/stats", params={"range": "5m"}, headers=auth)).json()
    series = body["series"]
    assert len(series["labels"]) == len(series["running"]) == 30  # 10 s buckets over 5 minutes
    assert series["vcpus"].count(2) == 1 and series["memory_mb"].count(1024) == 1
    assert sum(series["running"]) == 1
    assert body["peaks"] == {"running_count": 1, "vcpus": 2, "memory_mb": 1024}
    month = (await client.get("/v1/capsules/stats", params={"range": "30d"}, headers=auth)).json()
    assert len(month["series"]["labels"]) == 120 and sum(month["series"]["vcpus"]) == 6

    usage = await client.get(
        "/v1/capsules/usage",
        params={"from": str(today - dt.timedelta(days=4)), "to": str(today - dt.timedelta(days=2))},
        headers=auth,
    )
    points = usage.json()["points"]
    assert [p["date"] for p in points] == [str(today - dt.timedelta(days=n)) for n in (4, 3, 2)]
    # Each snapshot stands for one 10 s interval of 2 vCPUs and 1024 MB.
    assert [p["cpu_minutes"] for p in points] == [0, round(2 * 10 / 60, 2), round(2 * 10 / 60, 2)]
    ram = round(1024 * 10 / 60, 2)
    assert [p["ram_mb_minutes"] for p in points] == [0, ram, ram]
    for bad in ({"from": "2026-02-01", "to": "2026-01-01"}, {"from": "2020-01-01"}):
        assert_error(
            await client.get("/v1/capsules/usage", params=bad, headers=auth), 400, "invalid_request"
        )


async def test_metrics_of_paused_and_stopped_capsules(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await signup(client)
    auth = bearer(user["token"])
    paused = await add_capsule(db, user["team_id"], "paused", 1, 512)
    stopped = await add_capsule(db, user["team_id"], "stopped", 1, 512)
    empty = await client.get(f"/v1/capsules/{paused}/metrics", headers=auth)
    assert empty.status_code == 200 and empty.json() == {
        "sandbox_id": paused,
        "range": "10m",
        "points": [],
    }
    # A paused capsule shows the stored copy: the range before its last sample.
    paused_at = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    async with db.sessionmaker() as session, transaction(session, write=True):
        for minutes in (30, 8, 4, 0):
            for tier in ("10m", "2h"):
                session.add(
                    SandboxMetric(
                        sandbox_id=ids.SANDBOX.parse(paused),
                        tier=tier,
                        ts=paused_at - dt.timedelta(minutes=minutes),
                        cpu_pct=12.5,
                        mem_bytes=1000 + minutes,
                        disk_bytes=4096,
                    )
                )
    ten = (await client.get(f"/v1/capsules/{paused}/metrics", headers=auth)).json()
    assert [p["mem_bytes"] for p in ten["points"]] == [1008, 1004, 1000]
    assert ten["points"][-1]["timestamp_unix"] == int(paused_at.timestamp())
    five = await client.get(f"/v1/capsules/{paused}/metrics", params={"range": "5m"}, headers=auth)
    assert [p["mem_bytes"] for p in five.json()["points"]] == [1004, 1000]
    hour = await client.get(f"/v1/capsules/{paused}/metrics", params={"range": "1h"}, headers=auth)
    assert len(hour.json()["points"]) == 4
    assert_error(
        await client.get(f"/v1/capsules/{paused}/metrics", params={"range": "3d"}, headers=auth),
        400,
        "invalid_request",
    )
    assert_error(
        await client.get(f"/v1/capsules/{stopped}/metrics", headers=auth), 404, "not_found"
    )
    other = await signup(client)
    assert_error(
        await client.get(f"/v1/capsules/{paused}/metrics", headers=bearer(other["token"])),
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
