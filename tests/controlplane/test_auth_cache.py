"""The authentication cache: a credential's principal is reused for a moment, never past a
revocation. A write through this process drops it at once; a write this process did not make
(another control plane process, simulated by a raw connection that bypasses the ORM session) is
honoured within a second."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import APIKey, Team, TeamMember, User
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.services import auth_cache
from wrenn_server.controlplane.services.auth_cache import AuthCache
from wrenn_server.controlplane.services.capsule_listings import CapsuleListings
from wrenn_server.controlplane.services.principals import Principal

from .helpers import assert_error, bearer, signup

REVOCATION_BOUND_SEC = 1.0


async def _api_key(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    resp = await client.post("/v1/api-keys", json={"name": "ci"}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _refused_within(
    client: httpx.AsyncClient, headers: dict[str, str], *, since: float
) -> float:
    """Seconds from `since` until a request with `headers` is refused, counted to when that
    request was sent: the server decides somewhere between sending and answering, and a slow
    answer on a loaded machine is not a late refusal. A request sent past the bound and still
    accepted fails."""
    while True:
        sent = time.monotonic() - since
        resp = await client.get("/v1/capsules", headers=headers)
        if resp.status_code == 401:
            return sent
        assert resp.status_code == 200, resp.text
        assert sent <= REVOCATION_BOUND_SEC, "still accepted past the revocation bound"
        await asyncio.sleep(0.02)


def _cached_entries(app: FastAPI) -> int:
    cache: AuthCache = app.state.auth_cache
    return len(cache)


async def test_revoking_a_key_through_the_api_refuses_it_on_the_next_request(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    owner = await signup(client)
    key = await _api_key(client, owner["token"])
    headers = {"X-API-Key": key["key"]}
    assert (await client.get("/v1/capsules", headers=headers)).status_code == 200
    assert (await client.get("/v1/capsules", headers=headers)).status_code == 200
    assert _cached_entries(app) >= 1
    resp = await client.delete(f"/v1/api-keys/{key['id']}", headers=bearer(owner["token"]))
    assert resp.status_code == 204, resp.text
    assert_error(await client.get("/v1/capsules", headers=headers), 401, "unauthorized")


async def test_removing_a_member_through_the_api_refuses_their_cached_token_at_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    owner = await signup(client)
    member = await signup(client)
    team = owner["team_id"]
    resp = await client.post(
        f"/v1/teams/{team}/members", json={"email": member["email"]}, headers=bearer(owner["token"])
    )
    assert resp.status_code == 201, resp.text
    resp = await client.post(
        "/v1/auth/switch-team", json={"team_id": team}, headers=bearer(member["token"])
    )
    assert resp.status_code == 200, resp.text
    headers = bearer(resp.json()["token"])
    assert (await client.get("/v1/capsules", headers=headers)).status_code == 200
    assert (await client.get("/v1/capsules", headers=headers)).status_code == 200
    resp = await client.delete(
        f"/v1/teams/{team}/members/{member['user_id']}", headers=bearer(owner["token"])
    )
    assert resp.status_code == 204, resp.text
    assert_error(await client.get("/v1/capsules", headers=headers), 401, "unauthorized")


Revoke = Callable[[Database, dict[str, Any], dict[str, Any]], Awaitable[None]]


async def _raw(db: Database, stmt: Any) -> None:
    # A Core connection, not an ORM session: this process's invalidation does not see it, as
    # it would not see a write made by another control plane process.
    async with db.engine.begin() as conn:
        await conn.execute(stmt)


async def _revoke_key(db: Database, owner: dict[str, Any], key: dict[str, Any]) -> None:
    await _raw(
        db,
        update(APIKey)
        .where(APIKey.id == ids.API_KEY.parse(key["id"]))
        .values(revoked_at=dt.datetime.now(dt.UTC)),
    )


async def _deactivate_user(db: Database, owner: dict[str, Any], key: dict[str, Any]) -> None:
    await _raw(
        db, update(User).where(User.id == ids.USER.parse(owner["user_id"])).values(is_active=False)
    )


async def _remove_member(db: Database, owner: dict[str, Any], key: dict[str, Any]) -> None:
    await _raw(
        db,
        delete(TeamMember).where(
            TeamMember.team_id == ids.TEAM.parse(owner["team_id"]),
            TeamMember.user_id == ids.USER.parse(owner["user_id"]),
        ),
    )


async def _delete_team(db: Database, owner: dict[str, Any], key: dict[str, Any]) -> None:
    await _raw(
        db,
        update(Team)
        .where(Team.id == ids.TEAM.parse(owner["team_id"]))
        .values(deleted_at=dt.datetime.now(dt.UTC)),
    )


@pytest.mark.parametrize(
    ("credential", "revoke"),
    [
        ("api_key", _revoke_key),
        *((cred, revoke) for cred in ("api_key", "jwt")
          for revoke in (_deactivate_user, _remove_member, _delete_team)),
    ],
)  # fmt: skip
async def test_a_revocation_made_elsewhere_is_refused_within_a_second(
    client: httpx.AsyncClient, app: FastAPI, db: Database, credential: str, revoke: Revoke
) -> None:
    owner = await signup(client)
    key = await _api_key(client, owner["token"])
    headers = {"X-API-Key": key["key"]} if credential == "api_key" else bearer(owner["token"])
    assert (await client.get("/v1/capsules", headers=headers)).status_code == 200
    assert _cached_entries(app) >= 1
    await revoke(db, owner, key)
    elapsed = await _refused_within(client, headers, since=time.monotonic())
    assert elapsed <= REVOCATION_BOUND_SEC


def _principal() -> Principal:
    return Principal(kind="user", team_id=None, user_id=None, role=None, is_admin=False, name="x")


async def test_a_lookup_that_raced_a_committed_write_is_not_kept(db: Database) -> None:
    cache = AuthCache(ttl=60)
    read_at = auth_cache.generation()
    # A write to an auth table commits while the lookup is in flight.
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(update(User).where(User.id.is_(None)).values(is_active=False))
    assert auth_cache.generation() > read_at
    cache.put("token", _principal(), read_at_generation=read_at)
    assert cache.get("token") is None
    # A lookup that saw no such write is kept, until the next one.
    cache.put("token", _principal(), read_at_generation=auth_cache.generation())
    assert cache.get("token") is not None
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(Team(name="new team", slug="cachetest1"))
    assert cache.get("token") is None


async def test_a_write_drops_the_cache_at_its_commit_not_at_a_savepoint(db: Database) -> None:
    """An audited write releases a savepoint before it commits: a lookup in between still reads
    the old rows, so the cache is dropped at the commit. A savepoint rolled back (a failed audit
    write) leaves the transaction's earlier write to drop it."""
    cache = AuthCache(ttl=60)
    for audit_fails in (False, True):
        async with db.sessionmaker() as session, transaction(session, write=True):
            await session.execute(update(User).where(User.id.is_(None)).values(is_active=False))
            with contextlib.suppress(RuntimeError):
                async with session.begin_nested():
                    if audit_fails:
                        raise RuntimeError("a failed audit write")
            # A lookup racing the write, which has not committed yet.
            cache.put("token", _principal(), read_at_generation=auth_cache.generation())
        assert cache.get("token") is None, f"kept past the commit (audit failed: {audit_fails})"


async def test_a_rolled_back_write_keeps_the_cache(db: Database) -> None:
    cache = AuthCache(ttl=60)
    cache.put("token", _principal(), read_at_generation=auth_cache.generation())
    with pytest.raises(RuntimeError):
        async with db.sessionmaker() as session, transaction(session, write=True):
            await session.execute(update(User).where(User.id.is_(None)).values(is_active=False))
            raise RuntimeError("abort")
    assert cache.get("token") is not None


async def test_entries_expire_and_the_cache_is_bounded() -> None:
    cache = AuthCache(ttl=0.05, max_entries=2)
    gen = auth_cache.generation()
    cache.put("a", _principal(), read_at_generation=gen)
    assert cache.get("a") is not None
    deadline = time.monotonic() + 5
    while cache.get("a") is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    for name in ("a", "b", "c"):
        cache.put(name, _principal(), read_at_generation=gen)
    assert len(cache) <= 2


@pytest.mark.parametrize("credential", ["api_key", "jwt"])
async def test_a_credential_the_cache_answers_costs_no_database_session(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch, credential: str
) -> None:
    """Once cached, a credential opens no session of its own: GET /v1/capsules opens only the
    one its listing reads with."""
    app.state.auth_cache = AuthCache(ttl=600)  # cannot expire mid-test on a slow machine
    app.state.capsule_listings = CapsuleListings(ttl=0)  # each listing read again
    owner = await signup(client)
    if credential == "api_key":
        headers = {"X-API-Key": (await _api_key(client, owner["token"]))["key"]}
    else:
        headers = bearer(owner["token"])
    # An API key's first use records it and drops its entry: the second request caches it.
    for _ in range(2):
        assert (await client.get("/v1/capsules", headers=headers)).status_code == 200
    database: Database = app.state.db
    real = database.sessionmaker
    opened: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(database, "sessionmaker", counting)
    for _ in range(5):
        assert (await client.get("/v1/capsules", headers=headers)).status_code == 200
    assert len(opened) == 5


async def test_a_keys_first_use_leaves_other_credentials_cached(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording a key's last use (once a minute per key) is not a revocation: the cache keeps
    every other credential (it used to be emptied, so with many keys it held almost nothing)."""
    app.state.auth_cache = AuthCache(ttl=600)
    app.state.capsule_listings = CapsuleListings(ttl=0)  # each listing read again
    owner = await signup(client)
    key = await _api_key(client, owner["token"])
    cached = {"X-API-Key": key["key"]}
    fresh = {"X-API-Key": (await _api_key(client, owner["token"]))["key"]}
    for _ in range(2):
        assert (await client.get("/v1/capsules", headers=cached)).status_code == 200
    assert (await client.get("/v1/capsules", headers=fresh)).status_code == 200  # its first use
    database: Database = app.state.db
    real = database.sessionmaker
    opened: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(database, "sessionmaker", counting)
    assert (await client.get("/v1/capsules", headers=cached)).status_code == 200
    assert len(opened) == 1  # the listing's own: the key was still cached
    # A revocation still empties it.
    monkeypatch.undo()
    resp = await client.delete(f"/v1/api-keys/{key['id']}", headers=bearer(owner["token"]))
    assert resp.status_code == 204, resp.text
    assert_error(await client.get("/v1/capsules", headers=cached), 401, "unauthorized")
