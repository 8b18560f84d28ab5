"""Calls into a running capsule (REST exec, the E2B envd protocol) reuse what the caches know:
who the credential is and where the capsule runs, without a database statement. A pause or
destroy through this process is seen by the very next call; one made elsewhere (another control
plane process, simulated by a raw connection that bypasses the ORM session) within a second; a
revoked key or removed member is refused on these paths as on the rest of the API."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, text, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import APIKey, User
from wrenn_server.controlplane.db.models.capsules import Sandbox
from wrenn_server.controlplane.db.models.hosts import Host
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.services import (
    auth_cache,
    cache_listener,
    cache_sync,
    capsule_routes,
)
from wrenn_server.controlplane.services.auth_cache import AuthCache
from wrenn_server.controlplane.services.capsule_routes import CapsuleRoutes
from wrenn_server.controlplane.services.event_wakeups import listening_connection

from ..controlplane.helpers import assert_error
from ..waiting import wait_for
from .conftest import Stack
from .helpers import Account, make_capsule, new_account, write_elsewhere
from .test_port_proxy import host
from .test_port_proxy_access import capsule_with_port, echo  # noqa: F401

BOUND_SEC = 1.0
ENVD = {"E2b-Sandbox-Port": "49983", "Content-Type": "application/json"}


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements sent to the database by this task (the requests: httpx's ASGI
    transport runs the app in the caller's task; the app's background loops are not counted)
    while the block runs."""
    seen: list[str] = []
    task = asyncio.current_task()

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if asyncio.current_task() is task:
            seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)


async def _exec(stack: Stack, account: Account, cid: str) -> httpx.Response:
    return await stack.client.post(
        f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=account.h
    )


async def _envd_list(stack: Stack, cid: str, headers: dict[str, str]) -> httpx.Response:
    """A Connect call of E2B's envd protocol (process.Process/List) for the capsule."""
    return await stack.client.post(
        "/process.Process/List", json={}, headers={**ENVD, "E2b-Sandbox-Id": cid, **headers}
    )


def long_lived_caches(stack: Stack) -> None:
    """Caches that outlive the test, so that an entry's expiry on a slow machine cannot pass
    for a path that does not use them (the settings cap them at 1 s)."""
    stack.app.state.hosts.routes = CapsuleRoutes(ttl=600)
    stack.app.state.auth_cache = AuthCache(ttl=600)


def _routes(stack: Stack) -> CapsuleRoutes:
    routes: CapsuleRoutes = stack.app.state.hosts.routes
    return routes


async def test_repeated_execs_and_envd_calls_send_no_database_statement(stack: Stack) -> None:
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    long_lived_caches(stack)
    with statements(stack.db) as cold:  # what the caches save
        assert (await _exec(stack, account, cid)).status_code == 200
        assert (await _envd_list(stack, cid, account.h)).status_code == 200
    assert any("sandboxes" in s for s in cold) and any("api_keys" in s for s in cold)
    with statements(stack.db) as seen:
        for _ in range(3):
            resp = await _exec(stack, account, cid)
            assert resp.status_code == 200, resp.text
            resp = await _envd_list(stack, cid, account.h)
            assert resp.status_code == 200, resp.text
    assert seen == []


async def test_a_create_or_resume_keeps_the_route_its_first_command_takes(stack: Stack) -> None:
    account = await new_account(stack.client)
    long_lived_caches(stack)
    await make_capsule(stack.client, account)  # the key's last use written ...
    assert (await stack.client.get("/v1/capsules", headers=account.h)).status_code == 200
    with statements(stack.db) as sent:  # ... and the key cached
        cid = str((await make_capsule(stack.client, account))["id"])
    create = [" ".join(s.split()) for s in sent]
    # One round trip per statement on PostgreSQL: the team's row is read once (its lock, its
    # limits and its parking policy together), the capsule's once after the agent's answer.
    assert sum(" FROM teams" in s for s in create) == 1, create
    assert sum(s.startswith("SELECT sandboxes.id") for s in create) == 1, create
    assert len(create) <= 13, create
    with statements(stack.db) as seen:
        assert (await _exec(stack, account, cid)).status_code == 200
    assert seen == []

    resp = await stack.client.post(f"/v1/capsules/{cid}/pause", headers=account.h)
    assert resp.status_code == 200, resp.text
    resp = await stack.client.post(f"/v1/capsules/{cid}/resume", headers=account.h)
    assert resp.status_code == 200, resp.text
    with statements(stack.db) as seen:
        assert (await _exec(stack, account, cid)).status_code == 200
    assert seen == []
    route = _routes(stack).get(ids.SANDBOX.parse(cid))
    assert route is not None and route.started_at is not None
    assert route.started_at.isoformat() == (await _started_at(stack.db, cid)).isoformat()


async def _started_at(db: Database, cid: str) -> Any:
    async with db.sessionmaker() as session, transaction(session):
        return await session.scalar(
            select(Sandbox.started_at).where(Sandbox.id == ids.SANDBOX.parse(cid))
        )


async def test_a_write_counts_when_its_transaction_commits_not_at_a_savepoint(
    stack: Stack,
) -> None:
    """A route read between a released savepoint and the commit still sees the old row: the
    write moves the generation at the commit. A savepoint rolled back (a failed audit write)
    leaves the transaction's earlier writes to drop their entries at the commit."""
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    sandbox_id = ids.SANDBOX.parse(cid)
    assert (await _exec(stack, account, cid)).status_code == 200
    assert _routes(stack).get(sandbox_id) is not None
    before = capsule_routes.generation()
    async with stack.db.sessionmaker() as session, transaction(session, write=True):
        row = await session.get(Sandbox, sandbox_id)
        assert row is not None
        row.last_active_at = row.created_at
        await session.flush()
        async with session.begin_nested():
            pass
        assert capsule_routes.generation() == before
        assert _routes(stack).get(sandbox_id) is not None
    assert capsule_routes.generation() == before + 1
    assert _routes(stack).get(sandbox_id) is None

    assert (await _exec(stack, account, cid)).status_code == 200
    assert _routes(stack).get(sandbox_id) is not None
    async with stack.db.sessionmaker() as session, transaction(session, write=True):
        row = await session.get(Sandbox, sandbox_id)
        assert row is not None
        row.last_active_at = row.created_at
        await session.flush()
        with contextlib.suppress(RuntimeError):
            async with session.begin_nested():
                raise RuntimeError("a failed audit write")
    assert _routes(stack).get(sandbox_id) is None


async def test_a_pause_or_destroy_here_is_seen_by_the_next_call(stack: Stack) -> None:
    account = await new_account(stack.client)
    paused = str((await make_capsule(stack.client, account))["id"])
    destroyed = str((await make_capsule(stack.client, account))["id"])
    for cid in (paused, destroyed):
        assert (await _exec(stack, account, cid)).status_code == 200
        assert (await _envd_list(stack, cid, account.h)).status_code == 200
    assert len(_routes(stack)) >= 2

    resp = await stack.client.post(f"/v1/capsules/{paused}/pause", headers=account.h)
    assert resp.status_code == 200, resp.text
    assert_error(await _exec(stack, account, paused), 409, "invalid_state")
    assert (await _envd_list(stack, paused, account.h)).status_code != 200
    assert stack.agent.sandboxes[paused].status == "paused"

    resp = await stack.client.delete(f"/v1/capsules/{destroyed}", headers=account.h)
    assert resp.status_code == 204, resp.text
    assert (await _exec(stack, account, destroyed)).status_code in (404, 409)
    assert (await _envd_list(stack, destroyed, account.h)).status_code != 200

    # Resumed, it is reached again (and its new start is what the next call routes by).
    resp = await stack.client.post(f"/v1/capsules/{paused}/resume", headers=account.h)
    assert resp.status_code == 200, resp.text
    assert (await _exec(stack, account, paused)).status_code == 200
    route = _routes(stack).get(ids.SANDBOX.parse(paused))
    assert route is not None and route.status == "running"


async def test_a_pause_made_elsewhere_is_refused_within_a_second(stack: Stack) -> None:
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    assert (await _exec(stack, account, cid)).status_code == 200
    since = time.monotonic()
    sandbox_id = ids.SANDBOX.parse(cid)
    paused = update(Sandbox).where(Sandbox.id == sandbox_id).values(status="paused")
    await write_elsewhere(stack.db, paused)
    while True:
        sent = time.monotonic() - since  # a loaded machine may be slow to answer, not to send
        resp = await _exec(stack, account, cid)
        if resp.status_code == 409:
            break
        assert resp.status_code == 200, resp.text
        assert sent <= BOUND_SEC, "routed to a paused capsule past the bound"
        await asyncio.sleep(0.02)


async def test_a_revoked_key_is_refused_on_the_envd_path(stack: Stack) -> None:
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    assert (await _envd_list(stack, cid, account.h)).status_code == 200
    keys = (await stack.client.get("/v1/api-keys", headers=account.jwt)).json()
    resp = await stack.client.delete(f"/v1/api-keys/{keys[0]['id']}", headers=account.jwt)
    assert resp.status_code == 204, resp.text
    assert (await _envd_list(stack, cid, account.h)).status_code in (401, 404)

    # Revoked elsewhere: the second key of the team stops working within a second.
    resp = await stack.client.post("/v1/api-keys", json={"name": "b"}, headers=account.jwt)
    assert resp.status_code == 201, resp.text
    other = {"X-API-Key": resp.json()["key"]}
    assert (await _envd_list(stack, cid, other)).status_code == 200
    since = time.monotonic()
    revoked = update(APIKey).where(APIKey.id == ids.API_KEY.parse(resp.json()["id"]))
    await write_elsewhere(stack.db, revoked.values(revoked_at=APIKey.created_at))
    while True:
        sent = time.monotonic() - since
        if (status := (await _envd_list(stack, cid, other)).status_code) != 200:
            break
        assert sent <= BOUND_SEC, "a revoked key still worked past the bound"
        await asyncio.sleep(0.02)
    assert status in (401, 404)


async def test_a_removed_member_is_refused_on_the_envd_path(stack: Stack) -> None:
    owner = await new_account(stack.client)
    member = await new_account(stack.client)
    resp = await stack.client.post(
        f"/v1/teams/{owner.team_id}/members", json={"email": member.email}, headers=owner.jwt
    )
    assert resp.status_code == 201, resp.text
    cid = str((await make_capsule(stack.client, owner))["id"])
    # The member's token with the owner's team active: then only caches decide.
    resp = await stack.client.post(
        "/v1/auth/switch-team", json={"team_id": owner.team_id}, headers=member.jwt
    )
    assert resp.status_code == 200, resp.text
    headers = {"Authorization": f"Bearer {resp.json()['token']}"}
    long_lived_caches(stack)
    assert (await _envd_list(stack, cid, headers)).status_code == 200
    with statements(stack.db) as seen:
        assert (await _envd_list(stack, cid, headers)).status_code == 200
    assert seen == []
    user_id = ids.USER.format(await _user_id(stack.db, member.email))
    resp = await stack.client.delete(
        f"/v1/teams/{owner.team_id}/members/{user_id}", headers=owner.jwt
    )
    assert resp.status_code == 204, resp.text
    assert (await _envd_list(stack, cid, headers)).status_code in (401, 404)


async def _user_id(db: Database, email: str) -> uuid.UUID | None:
    async with db.sessionmaker() as session, transaction(session):
        return await session.scalar(select(User.id).where(User.email == email))


async def test_only_running_capsules_are_kept_and_a_racing_read_is_not(
    stack: Stack,
) -> None:
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    routes = CapsuleRoutes(ttl=5)
    sandbox_id = ids.SANDBOX.parse(cid)
    async with stack.db.sessionmaker() as session, transaction(session):
        sandbox = await session.get(Sandbox, sandbox_id)
        assert sandbox is not None
        read_at = capsule_routes.generation()
        await routes.read(session, sandbox, read_at_generation=read_at)
        assert routes.get(sandbox_id) is not None
        routes.clear()
        # A write to the capsule committed while it was being read: not kept.
        await routes.read(session, sandbox, read_at_generation=read_at - 1)
        assert routes.get(sandbox_id) is None
        sandbox.status = "paused"  # not written: what a non-running read looks like
        await routes.read(session, sandbox, read_at_generation=read_at)
        assert routes.get(sandbox_id) is None
        sandbox.status = "running"
        await session.rollback()


async def test_writes_drop_the_capsules_entry_a_hosts_address_drops_all(stack: Stack) -> None:
    account = await new_account(stack.client)
    one = str((await make_capsule(stack.client, account))["id"])
    two = str((await make_capsule(stack.client, account))["id"])
    for cid in (one, two):
        assert (await _exec(stack, account, cid)).status_code == 200
    routes = _routes(stack)
    one_id, two_id = ids.SANDBOX.parse(one), ids.SANDBOX.parse(two)
    assert routes.get(one_id) is not None and routes.get(two_id) is not None

    async with stack.db.sessionmaker() as session, transaction(session, write=True):
        row = await session.get(Sandbox, one_id)
        assert row is not None
        row.last_active_at = row.created_at
    assert routes.get(one_id) is None and routes.get(two_id) is not None

    host_id = routes.get(two_id).host.id  # type: ignore[union-attr]
    async with stack.db.sessionmaker() as session, transaction(session, write=True):
        host = await session.get(Host, host_id)
        assert host is not None
        host.last_heartbeat_at = host.created_at  # a heartbeat moves nothing
    assert routes.get(two_id) is not None
    async with stack.db.sessionmaker() as session, transaction(session, write=True):
        host = await session.get(Host, host_id)
        assert host is not None
        address = host.address
        host.address = "127.0.0.1:1"
    assert len(routes) == 0
    async with stack.db.sessionmaker() as session, transaction(session, write=True):
        host = await session.get(Host, host_id)
        assert host is not None
        host.address = address
    assert (await _exec(stack, account, two)).status_code == 200


def _running() -> tuple[Sandbox, Host]:
    sandbox = Sandbox(
        id=uuid.uuid4(), team_id=uuid.uuid4(), status="running", public_ports=[], auto_resume=False
    )
    return sandbox, Host(id=uuid.uuid4(), address="127.0.0.1:1")


async def test_entries_expire_and_the_cache_is_bounded() -> None:
    routes = CapsuleRoutes(ttl=0.05, max_entries=2)
    sandbox, host = _running()
    routes.put(sandbox, host, read_at_generation=capsule_routes.generation())
    assert routes.get(sandbox.id) is not None
    deadline = time.monotonic() + 5
    while routes.get(sandbox.id) is not None:
        assert time.monotonic() < deadline, "an entry outlived its ttl"
        await asyncio.sleep(0.01)
    for _ in range(3):
        routes.put(*_running(), read_at_generation=capsule_routes.generation())
    assert 1 <= len(routes) <= 2
    off = CapsuleRoutes(ttl=0)
    off.put(*_running(), read_at_generation=capsule_routes.generation())
    assert len(off) == 0


async def test_the_port_proxy_refuses_a_revoked_key_and_a_paused_capsule_at_once(
    stack: Stack,
    echo: int,  # noqa: F811
) -> None:
    account = await new_account(stack.client)
    cid = await capsule_with_port(stack, account, 8000, echo)
    api = stack.client
    long_lived_caches(stack)
    for _ in range(2):
        resp = await api.get("/", headers={**host(8000, cid), **account.h})
        assert resp.status_code == 200, resp.text
    with statements(stack.db) as seen:
        assert (await api.get("/", headers={**host(8000, cid), **account.h})).status_code == 200
    assert seen == []

    resp = await api.post(f"/v1/capsules/{cid}/pause", headers=account.h)
    assert resp.status_code == 200, resp.text
    assert_error(await api.get("/", headers={**host(8000, cid), **account.h}), 409, "invalid_state")
    resp = await api.post(f"/v1/capsules/{cid}/resume", headers=account.h)
    assert resp.status_code == 200, resp.text
    stack.agent.sandboxes[cid].ports[8000] = ("127.0.0.1", echo)
    assert (await api.get("/", headers={**host(8000, cid), **account.h})).status_code == 200

    keys = (await api.get("/v1/api-keys", headers=account.jwt)).json()
    resp = await api.delete(f"/v1/api-keys/{keys[0]['id']}", headers=account.jwt)
    assert resp.status_code == 204, resp.text
    resp = await api.get("/", headers={**host(8000, cid), **account.h})
    assert resp.status_code == 401, resp.text


# -- other processes' writes, heard on PostgreSQL (services/cache_sync.py) -------------------


def _on_postgresql(stack: Stack) -> None:
    if stack.db.dialect != "postgresql":
        pytest.skip("on SQLite entries live their TTL")


async def _kept_past_their_ttl(stack: Stack, account: Account, cid: str) -> None:
    """With the key and the route cached, wait out their TTL: a command still reads nothing."""
    await wait_for(cache_sync.listening, 10, interval=0.01, what="the cache listener")
    for _ in range(2):  # a key's first use records it and drops its entry
        assert (await _exec(stack, account, cid)).status_code == 200
    kept = time.monotonic()
    ttl = max(capsule_routes.TTL_SEC, auth_cache.TTL_SEC)
    await wait_for(lambda: time.monotonic() - kept > 2 * ttl, what="the TTL passed")
    with statements(stack.db) as seen:
        assert (await _exec(stack, account, cid)).status_code == 200
    assert seen == [], "read again though nothing was written"


@pytest.mark.parametrize("write", ["pause", "revocation"])
async def test_a_write_elsewhere_is_heard_by_entries_kept_past_their_ttl(
    stack: Stack, write: str
) -> None:
    _on_postgresql(stack)
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    await _kept_past_their_ttl(stack, account, cid)
    since = time.monotonic()
    if write == "pause":
        sandbox_id = ids.SANDBOX.parse(cid)
        await write_elsewhere(
            stack.db, update(Sandbox).where(Sandbox.id == sandbox_id).values(status="paused")
        )
    else:
        await write_elsewhere(stack.db, update(APIKey).values(revoked_at=APIKey.created_at))
    while True:
        sent = time.monotonic() - since  # a loaded machine may be slow to answer, not to send
        if (resp := await _exec(stack, account, cid)).status_code != 200:
            break
        assert sent <= BOUND_SEC, f"the {write} unseen past the bound"
        await asyncio.sleep(0.02)
    assert resp.status_code == (409 if write == "pause" else 401), resp.text


async def test_a_lost_listener_drops_what_it_may_have_missed(stack: Stack) -> None:
    """While the listener is away, a write's notification is lost: back, it drops every entry
    (and meanwhile entries lived their TTL only)."""
    _on_postgresql(stack)
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    await _kept_past_their_ttl(stack, account, cid)
    async with stack.db.engine.begin() as conn:
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :n AND datname = current_database()"
            ),
            {"n": cache_listener.APPLICATION_NAME},
        )
    await wait_for(lambda: not cache_sync.listening(), 5, interval=0.005, what="the listener lost")
    # A pause whose notification nobody hears (no listener, or written by hand).
    async with stack.db.engine.begin() as conn:
        sandbox_id = ids.SANDBOX.parse(cid)
        await conn.execute(update(Sandbox).where(Sandbox.id == sandbox_id).values(status="paused"))
    await wait_for(cache_sync.listening, 10, interval=0.01, what="the listener back")
    assert (await _exec(stack, account, cid)).status_code == 409


async def test_writes_other_processes_may_have_kept_notify_them(stack: Stack) -> None:
    """A key revoked or a running capsule paused notifies at its commit; a create (a new row,
    kept nowhere yet) does not."""
    _on_postgresql(stack)
    heard: list[str] = []
    async with stack.db.engine.connect() as conn:
        pg: Any = (await conn.get_raw_connection()).driver_connection

        def note(_conn: object, _pid: int, _channel: str, sender: str) -> None:
            if not sender.startswith(cache_listener.BEAT):  # the listeners' own heartbeats
                heard.append(sender)

        await pg.add_listener(cache_sync.CHANNEL, note)
        try:
            account = await new_account(stack.client)
            resp = await stack.client.post("/v1/api-keys", json={"name": "b"}, headers=account.jwt)
            assert resp.status_code == 201, resp.text
            key_id = resp.json()["id"]
            heard.clear()
            cid = str((await make_capsule(stack.client, account))["id"])
            resp = await stack.client.delete(f"/v1/api-keys/{key_id}", headers=account.jwt)
            assert resp.status_code == 204, resp.text
            await wait_for(lambda: heard, 5, interval=0.01, what="the revocation's notification")
            assert heard == [cache_sync.SENDER], "the create notified too"
            resp = await stack.client.post(f"/v1/capsules/{cid}/pause", headers=account.h)
            assert resp.status_code == 200, resp.text
            await wait_for(lambda: len(heard) > 1, 5, interval=0.01, what="the pause's")
        finally:
            await pg.remove_listener(cache_sync.CHANNEL, note)


async def test_a_listener_that_does_not_hear_its_heartbeat_never_vouches(db: Database) -> None:
    """A connection whose notifications do not come back (a pooler in transaction mode passes
    them to whichever client holds the server connection) must leave entries to their TTL."""
    if db.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL")

    @contextlib.asynccontextmanager
    async def deaf(engine: Any, timeout: float) -> Any:
        async with listening_connection(engine, timeout) as (pg, lost):
            yield _Deaf(pg), lost

    deaf_listener = cache_listener.CacheListener(db.url, timeout=0.5, backoff_max=0.5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache_listener, "listening_connection", deaf)
        deaf_listener.start()
        try:
            watched = time.monotonic()
            while time.monotonic() - watched < 2 * cache_sync.FRESH_WITHIN:
                assert not cache_sync.listening(), "vouched without hearing its heartbeat"
                await asyncio.sleep(0.02)
        finally:
            await deaf_listener.stop()
    listener = cache_listener.CacheListener(db.url, timeout=5, backoff_max=0.5)
    listener.start()
    try:
        await wait_for(cache_sync.listening, 10, interval=0.01, what="a listener that hears")
    finally:
        await listener.stop()
    assert not cache_sync.listening()


class _Deaf:
    """An asyncpg connection whose LISTENs register nothing."""

    def __init__(self, pg: Any) -> None:
        self._pg = pg

    async def add_listener(self, *_args: Any) -> None:
        pass

    async def execute(self, query: str) -> Any:
        return await self._pg.execute(query)
