"""GET /v1/capsules serves a team's listing again without reading the database while no capsule
was written: a write through this process shows in the very next listing, one by another control
plane process on this machine (a raw write, which this process's ORM sessions never see, and a
bump of the shared stamp from a real second process) too, and one from another machine (no bump)
within a second. Credentials are still checked on every request."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import WRITE_STAMP_FILE
from wrenn_server.controlplane.db.models import APIKey
from wrenn_server.controlplane.db.models.capsules import Sandbox
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.schemas.capsules import Capsule
from wrenn_server.controlplane.services import capsule_routes
from wrenn_server.controlplane.services.auth_cache import AuthCache
from wrenn_server.controlplane.services.capsule_listings import CapsuleListings

from ..controlplane.helpers import assert_error
from .conftest import Stack
from .helpers import Account, make_capsule, new_account, write_elsewhere
from .test_capsule_routes import statements

BOUND_SEC = 1.0


def _long_lived(stack: Stack) -> CapsuleListings:
    """Caches that outlive the test, so that an entry's expiry cannot pass for a write seen."""
    listings = CapsuleListings(ttl=600)
    stack.app.state.capsule_listings = listings
    stack.app.state.auth_cache = AuthCache(ttl=600)
    return listings


async def _listed(stack: Stack, account: Account, query: str = "") -> dict[str, str]:
    """Capsule id -> status, as the listing answers."""
    resp = await stack.client.get(f"/v1/capsules{query}", headers=account.h)
    assert resp.status_code == 200, resp.text
    return {c["id"]: c["status"] for c in resp.json()}


async def _raw(db: Database, wire_id: str, **values: Any) -> None:
    """A write this process's ORM sessions never see (as another process's would be)."""
    async with db.engine.begin() as conn:
        await conn.execute(
            update(Sandbox).where(Sandbox.id == ids.SANDBOX.parse(wire_id)).values(**values)
        )


def _bump_from_another_process(stack: Stack) -> None:
    path: Path = stack.app.state.settings.data_dir / WRITE_STAMP_FILE
    code = (
        "import sys; from pathlib import Path\n"
        "from wrenn_server.controlplane.services.write_stamp import WriteStamp\n"
        "WriteStamp(Path(sys.argv[1])).bump()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)


async def test_a_repeated_listing_reads_nothing_and_answers_the_same(stack: Stack) -> None:
    account = await new_account(stack.client)
    made = [await make_capsule(stack.client, account) for _ in range(2)]
    listings = _long_lived(stack)
    await stack.client.get("/v1/capsules", headers=account.h)  # the key cached
    first = await stack.client.get("/v1/capsules", headers=account.h)
    with statements(stack.db) as seen:
        again = await stack.client.get("/v1/capsules", headers=account.h)
    assert seen == []
    assert len(listings) == 1
    assert again.content == first.content
    assert again.headers["content-type"] == "application/json"
    # What the route's response model says, newest first.
    listed = [Capsule.model_validate(c) for c in again.json()]
    assert [c.id for c in listed] == [m["id"] for m in reversed(made)]
    assert all(c.status == "running" for c in listed)


@pytest.mark.parametrize("shared", [True, False], ids=["stamp", "no-stamp"])
async def test_writes_through_this_process_show_in_the_next_listing(
    stack: Stack, shared: bool
) -> None:
    account = await new_account(stack.client)
    _long_lived(stack)
    if not shared:  # as when the data directory could not hold the stamp
        capsule_routes.share_writes(None)
    assert await _listed(stack, account) == {}
    cid = str((await make_capsule(stack.client, account))["id"])
    assert await _listed(stack, account) == {cid: "running"}
    resp = await stack.client.post(f"/v1/capsules/{cid}/pause", headers=account.h)
    assert resp.status_code == 200, resp.text
    assert await _listed(stack, account) == {cid: "paused"}
    resp = await stack.client.patch(
        f"/v1/capsules/{cid}", json={"auto_resume": True}, headers=account.h
    )
    assert resp.status_code == 200, resp.text
    listed = (await stack.client.get("/v1/capsules", headers=account.h)).json()
    assert [c["auto_resume"] for c in listed] == [True]
    resp = await stack.client.delete(f"/v1/capsules/{cid}", headers=account.h)
    assert resp.status_code == 204, resp.text
    assert await _listed(stack, account) == {}
    assert await _listed(stack, account, "?status=stopped") == {cid: "stopped"}


async def test_a_write_by_another_process_on_this_machine_shows_at_once(stack: Stack) -> None:
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    _long_lived(stack)
    assert await _listed(stack, account) == {cid: "running"}
    await _raw(stack.db, cid, status="paused")
    # The write alone is not seen: the listing is served from the cache ...
    assert await _listed(stack, account) == {cid: "running"}
    # ... until the process that made it bumps the stamp, as its commit does.
    _bump_from_another_process(stack)
    assert await _listed(stack, account) == {cid: "paused"}


async def test_a_write_from_another_machine_shows_within_a_second(stack: Stack) -> None:
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    assert await _listed(stack, account) == {cid: "running"}
    await _raw(stack.db, cid, status="paused")
    written = time.monotonic()
    while (await _listed(stack, account)) != {cid: "paused"}:
        assert time.monotonic() - written <= BOUND_SEC, "a stale listing past the bound"
        await asyncio.sleep(0.02)


async def test_filters_and_teams_are_listed_apart(stack: Stack) -> None:
    alice = await new_account(stack.client)
    bob = await new_account(stack.client)
    _long_lived(stack)
    a = str((await make_capsule(stack.client, alice, metadata={"env": "prod"}))["id"])
    b = str((await make_capsule(stack.client, bob))["id"])
    for _ in range(2):  # the second answer from the cache
        assert await _listed(stack, alice) == {a: "running"}
        assert await _listed(stack, bob) == {b: "running"}
        assert await _listed(stack, alice, "?metadata=env:prod") == {a: "running"}
        assert await _listed(stack, alice, "?metadata=env:dev") == {}
        assert await _listed(stack, alice, "?status=paused") == {}
        assert await _listed(stack, alice, "?status=running,paused") == {a: "running"}
    assert_error(
        await stack.client.get("/v1/capsules?status=sleeping", headers=alice.h),
        400,
        "invalid_request",
    )


async def test_a_revoked_key_is_refused_though_its_listing_is_kept(stack: Stack) -> None:
    account = await new_account(stack.client)
    await make_capsule(stack.client, account)
    listings = CapsuleListings(ttl=600)
    stack.app.state.capsule_listings = listings
    assert len(await _listed(stack, account)) == 1
    assert len(listings) == 1
    await write_elsewhere(stack.db, update(APIKey).values(revoked_at=dt.datetime.now(dt.UTC)))
    deadline = time.monotonic() + BOUND_SEC
    while (resp := await stack.client.get("/v1/capsules", headers=account.h)).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key still listed past the bound"
        await asyncio.sleep(0.02)
    assert_error(resp, 401, "unauthorized")
