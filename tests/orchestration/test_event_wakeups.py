"""Event wake-ups across control plane processes: two applications, each with its own database
engine (so nothing in this test process wakes one from the other's commit), share one database;
with the fallback poll set to a minute, an event made through one reaches a stream on the other
within seconds only if the wake-up (PostgreSQL LISTEN/NOTIFY, Redis pub/sub) carried it. The
listeners reconnect after their connection is killed and close at shutdown; an event whose
wake-up never came still arrives with the poll."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from pydantic import SecretStr
from sqlalchemy import text

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models import Event
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.services import event_wakeups
from wrenn_server.controlplane.services.event_wakeups import APPLICATION_NAME, REDIS_CHANNEL
from wrenn_server.controlplane.services.events import NOTIFY_CHANNEL
from wrenn_server.controlplane.settings import Settings

from ..controlplane.conftest import TEST_JWT_SECRET
from ..fakeagent import FakeAgentServer
from ..waiting import wait_for
from .conftest import BASE_URL, Stack
from .helpers import make_capsule, new_account
from .test_events import served, stream

SLOW_POLL = 60.0  # far longer than any wait below: an event in time came with a wake-up
PROMPT = 10.0

OwnApp = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


@pytest.fixture
def own_app(db: Database, fake_agent: FakeAgentServer, tmp_path: Path) -> OwnApp:
    """`async with own_app(**settings) as stack:` an application with a database engine of its
    own (as a separate process has) on the test's database, over the fake agent."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Stack]:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "controlplane",
            "database_url": db.url,
            "jwt_secret": SecretStr(TEST_JWT_SECRET),
            "migrate_on_start": False,
            "agent_address": fake_agent.target,
            "agent_secret": SecretStr(fake_agent.secret),
            "reconcile_interval_sec": 0,
            "stats_sample_interval_sec": 0,
            "redis_url": None,
            "events_poll_interval_sec": SLOW_POLL,
            **overrides,
        }
        app = create_app(Settings(**values))
        assert app.state.db is not db
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url=BASE_URL, timeout=30
            ) as client:
                yield Stack(app, client, fake_agent, app.state.db)

    return start


def _backend(name: str, dialect: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if name == "postgres":
        if dialect != "postgresql":
            pytest.skip("LISTEN/NOTIFY needs PostgreSQL")
        return {"events_wakeup": "postgres"}
    return {"events_wakeup": "redis", "redis_url": request.getfixturevalue("redis_url")}


async def _listeners(db: Database) -> int:
    async with db.sessionmaker() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                "AND datname = current_database()"
            ),
            {"name": APPLICATION_NAME},
        )
    return int(count or 0)


async def _redis_subscribers(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        counts = await client.pubsub_numsub("wrenn:events")
    finally:
        await client.aclose()
    return int(counts[0][1]) if counts else 0


async def _kill_listeners(name: str, db: Database, redis_url: str | None) -> None:
    """End the listeners' connections from the server's side."""
    if name == "postgres":
        async with db.sessionmaker() as session, transaction(session):
            await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND datname = current_database()"
                ),
                {"name": APPLICATION_NAME},
            )
        return
    assert redis_url is not None
    client = redis.Redis.from_url(redis_url)
    try:
        killed = await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await client.aclose()
    assert int(killed) >= 2


def _listening(name: str, db: Database, redis_url: str | None) -> Callable[[], Awaitable[int]]:
    if name == "postgres":
        return lambda: _listeners(db)
    assert redis_url is not None
    return lambda: _redis_subscribers(redis_url)


@pytest.mark.parametrize("backend", ["postgres", "redis"])
async def test_an_event_through_one_process_wakes_the_others_stream(
    own_app: OwnApp,
    db: Database,
    dialect: str,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    settings = _backend(backend, dialect, request)
    redis_url = settings.get("redis_url")
    listening = _listening(backend, db, redis_url)
    async with own_app(**settings) as one, own_app(**settings) as two, served(two.app) as url:
        ada = await new_account(one.client)
        await wait_for(lambda: _at_least(listening, 2), 15, what="both listeners")
        async with stream(url, ada.h) as events:
            capsule = await make_capsule(one.client, ada)
            async with asyncio.timeout(PROMPT):
                (created,) = await events.capsule_events(capsule["id"], 1)
            assert created.data["event"] == "capsule.create"

            # The listeners' connections are killed: they reconnect, and the next event is
            # as prompt (one written while a listener is away is read when it is back).
            await _kill_listeners(backend, db, redis_url)
            resp = await one.client.post(f"/v1/capsules/{capsule['id']}/pause", headers=ada.h)
            assert resp.status_code == 200, resp.text
            async with asyncio.timeout(PROMPT + 2):
                (paused,) = await events.capsule_events(capsule["id"], 1)
            assert paused.data["event"] == "capsule.pause"
            await wait_for(lambda: _at_least(listening, 2), 15, what="the listeners back")
    # Closed with their applications.
    await wait_for(lambda: _at_most(listening, 0), 15, what="the listeners closed")


async def _at_least(count: Callable[[], Awaitable[int]], n: int) -> bool:
    return await count() >= n


async def _at_most(count: Callable[[], Awaitable[int]], n: int) -> bool:
    return await count() <= n


async def test_own_commits_wake_the_stream_of_a_single_process(own_app: OwnApp) -> None:
    """No other process to hear from: the process's own commit wakes its hub."""
    async with own_app(events_wakeup="local") as one, served(one.app) as url:
        ada = await new_account(one.client)
        async with stream(url, ada.h) as events:
            capsule = await make_capsule(one.client, ada)
            async with asyncio.timeout(PROMPT):
                (created,) = await events.capsule_events(capsule["id"], 1)
            assert created.data["event"] == "capsule.create"


async def test_an_event_without_a_wakeup_arrives_with_the_poll(
    own_app: OwnApp, db: Database
) -> None:
    """An event row written with no notification and no commit hook (as if the wake-up were
    lost) reaches the stream at the next poll."""
    async with own_app(events_poll_interval_sec=0.5) as one, served(one.app) as url:
        ada = await new_account(one.client)
        async with stream(url, ada.h) as events:
            lost = f"sb-{uuid.uuid4()}"
            payload = {
                "event": "capsule.destroy",
                "outcome": "success",
                "resource": {"id": lost, "type": "sandbox"},
                "actor": {"type": "system", "id": None, "name": "system"},
                "metadata": {"action": "destroy", "to": "stopped"},
                "sandbox": None,
                "timestamp": "2026-01-01T00:00:00+00:00",
            }
            # The test's own engine: no hub listens to its commits, and a bare insert notifies
            # nobody.
            async with db.sessionmaker() as session, transaction(session, write=True):
                session.add(
                    Event(
                        team_id=ids.TEAM.parse(ada.team_id), kind="capsule.destroy", payload=payload
                    )
                )
            (frame,) = await events.capsule_events(lost, 1)
            assert frame.data == payload


@pytest.mark.parametrize("backend", ["postgres", "redis"])
async def test_a_listener_skips_the_wakeups_of_its_own_process(
    db: Database, dialect: str, backend: str, request: pytest.FixtureRequest
) -> None:
    """Its own process's hub was woken by the commit hook already: of two wake-ups sent
    together, its own and another process's, only the other's wakes it (besides the wake-up
    every connection makes)."""
    settings = _backend(backend, dialect, request)
    redis_url = settings.get("redis_url")
    wakeups = event_wakeups.wakeups_for(
        settings["events_wakeup"],
        database_url=db.url,
        redis_url=redis_url,
        timeout=5,
        backoff_max=1,
        own="this-process",
    )
    woken = 0

    def wake() -> None:
        nonlocal woken
        woken += 1

    listening = asyncio.create_task(wakeups.listen(wake))
    try:
        await wait_for(lambda: woken == 1, 15, what="the listener connected")
        senders = ("this-process", "another-process")
        if backend == "postgres":
            async with db.sessionmaker() as session, transaction(session):
                for sender in senders:  # delivered together, in order, at commit
                    await session.execute(
                        text("SELECT pg_notify(:channel, :sender)"),
                        {"channel": NOTIFY_CHANNEL, "sender": sender},
                    )
        else:
            assert redis_url is not None
            client = redis.Redis.from_url(redis_url)
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for sender in senders:
                        pipe.publish(REDIS_CHANNEL, sender)
                    await pipe.execute()
            finally:
                await client.aclose()
        await wait_for(lambda: woken >= 2, PROMPT, what="the other process's wake-up")
        assert woken == 2
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await wakeups.close()
