"""Per-capsule metrics over REST with a real capsule: live samples while it runs, the copy the
control plane stores on pause (served while it is paused), the 24 h tier kept on destroy, and
404 once it is stopped. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models.capsules import SandboxMetric
from wrenn_server.controlplane.db.session import Database

from ..controlplane.helpers import assert_error
from .rest_fixtures import Account, both_dialects, make_capsule, new_account

pytestmark = [pytest.mark.integration, both_dialects]


async def _points(api: httpx.AsyncClient, user: Account, capsule_id: str) -> list[dict[str, Any]]:
    resp = await api.get(f"/v1/capsules/{capsule_id}/metrics", headers=user.h)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["sandbox_id"] == capsule_id and body["range"] == "10m"
    points: list[dict[str, Any]] = body["points"]
    return points


async def _stored_tiers(db: Database, capsule_id: str) -> dict[str, int]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(SandboxMetric.tier).where(
                SandboxMetric.sandbox_id == ids.SANDBOX.parse(capsule_id)
            )
        )
        tiers: dict[str, int] = {}
        for tier in rows:
            tiers[tier] = tiers.get(tier, 0) + 1
        return tiers


async def test_metrics_follow_the_capsule_lifecycle(
    api: httpx.AsyncClient, rest_db: Database
) -> None:
    user = await new_account(api)
    capsule_id = (await make_capsule(api, user))["id"]

    deadline = time.monotonic() + 15
    while len(live := await _points(api, user, capsule_id)) < 4:
        assert time.monotonic() < deadline, live
        await asyncio.sleep(0.5)
    now = time.time()
    assert all(now - 60 < p["timestamp_unix"] <= now + 1 for p in live)
    assert all(p["mem_bytes"] > 0 and p["disk_bytes"] > 0 for p in live[1:])
    assert all(0 <= p["cpu_pct"] <= 100 for p in live)

    resp = await api.post(f"/v1/capsules/{capsule_id}/pause", headers=user.h)
    assert resp.status_code == 200, resp.text
    stored = await _stored_tiers(rest_db, capsule_id)
    assert stored.get("10m", 0) >= len(live)
    paused = await _points(api, user, capsule_id)
    assert len(paused) >= len(live)
    assert paused[: len(live)] == live  # the same samples, now from the database

    resp = await api.post(f"/v1/capsules/{capsule_id}/resume", headers=user.h)
    assert resp.status_code == 200, resp.text
    resumed = await _points(api, user, capsule_id)
    assert len(resumed) >= len(paused)  # the agent kept the series across the pause

    resp = await api.delete(f"/v1/capsules/{capsule_id}", headers=user.h)
    assert resp.status_code == 204, resp.text
    # Only the 24 h tier outlives the capsule (empty this early: its first 5 min step is open).
    assert set(await _stored_tiers(rest_db, capsule_id)) <= {"24h"}
    assert_error(
        await api.get(f"/v1/capsules/{capsule_id}/metrics", headers=user.h), 404, "not_found"
    )
