"""The build queue on a real Redis and in process: first in, first out; an empty queue answers
None after its timeout; several consumers never get the same id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from wrenn_server.controlplane.builds.queue import BuildQueue, MemoryQueue, RedisQueue


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
