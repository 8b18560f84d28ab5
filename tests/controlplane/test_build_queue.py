"""The build queue on a real Redis and in process: first in, first out; an empty queue answers
None after its timeout; several consumers never get the same id. A Redis that never answers
fails the queue's commands within its timeouts, and a build submitted meanwhile gets a 503."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.builds.queue import BuildQueue, MemoryQueue, RedisQueue
from wrenn_server.controlplane.db.models import Template, TemplateBuild
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.settings import Settings

from .helpers import count, signup


@pytest.fixture(params=["redis", "memory"])
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[BuildQueue]:
    if request.param == "memory":
        made: BuildQueue = MemoryQueue()
    else:
        made = RedisQueue(request.getfixturevalue("redis_url"), key=f"test:{uuid.uuid4().hex}")
    yield made
    await made.close()


async def test_first_in_first_out(queue: BuildQueue) -> None:
    ids = [uuid.uuid4() for _ in range(5)]
    for build_id in ids:
        await queue.put(build_id)
    assert [await queue.get(timeout=1) for _ in ids] == ids
    started = asyncio.get_running_loop().time()
    assert await queue.get(timeout=1) is None
    assert asyncio.get_running_loop().time() - started >= 0.9


async def test_consumers_share_the_work(queue: BuildQueue) -> None:
    ids = {uuid.uuid4() for _ in range(20)}
    got: list[uuid.UUID] = []

    async def consume() -> None:
        while (build_id := await queue.get(timeout=1)) is not None:
            got.append(build_id)

    consumers = [asyncio.create_task(consume()) for _ in range(3)]
    for build_id in ids:
        await queue.put(build_id)
    await asyncio.gather(*consumers)
    assert sorted(got) == sorted(ids)


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A "Redis" on a local port that accepts connections and never answers anything."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # kept open, never written to

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_silent_redis_fails_commands_within_the_timeouts(silent_redis: str) -> None:
    queue = RedisQueue(silent_redis, connect_timeout=0.5, socket_timeout=0.5)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(RedisTimeoutError):
            await queue.put(uuid.uuid4())
        assert loop.time() - started < 3
        started = loop.time()
        with pytest.raises(RedisTimeoutError):
            await queue.get(timeout=1)  # its own wait (1 s) plus the socket timeout
        assert 1.4 <= loop.time() - started < 4
    finally:
        await queue.close()


async def test_a_build_submitted_to_a_silent_redis_is_a_503(
    settings: Settings, db: Database, silent_redis: str
) -> None:
    app = create_app(
        settings.model_copy(
            update={
                "redis_url": silent_redis,
                "redis_connect_timeout_sec": 0.5,
                "redis_socket_timeout_sec": 0.5,
                "events_wakeup": "local",
                "build_workers": 0,
            }
        ),
        db=db,
    )
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(Template(name="minimal", team_id=ids.PLATFORM_TEAM_ID, type="base"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
        admin = await signup(c)  # the first account is the platform admin
        jwt = {"authorization": f"Bearer {admin['token']}"}
        started = asyncio.get_running_loop().time()
        resp = await c.post(
            "/v1/admin/builds", json={"name": "hung", "recipe": ["RUN true"]}, headers=jwt
        )
        assert asyncio.get_running_loop().time() - started < 5
        assert resp.status_code == 503, resp.text
        error = resp.json()["error"]
        assert error["code"] == "service_unavailable"
        assert error["message"] == "the build queue is unavailable; try again"
    # Nothing half-created: the build was removed again.
    assert await count(db, TemplateBuild) == 0
