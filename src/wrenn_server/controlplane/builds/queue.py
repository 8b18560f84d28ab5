"""The build queue: build ids in, build ids out, in order. Redis (RPUSH/BLPOP on one list) when
`WRENN_REDIS_URL` is set, so several control plane processes share it; otherwise in-process."""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

import redis.asyncio as redis

QUEUE_KEY = "wrenn:builds"


class BuildQueue(Protocol):
    async def put(self, build_id: uuid.UUID) -> None: ...

    async def get(self, timeout: float) -> uuid.UUID | None:
        """The next build id, or None after `timeout` seconds without one."""
        ...

    async def close(self) -> None: ...


class MemoryQueue:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()

    async def put(self, build_id: uuid.UUID) -> None:
        self._queue.put_nowait(build_id)

    async def get(self, timeout: float) -> uuid.UUID | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def close(self) -> None:
        pass


class RedisQueue:
    def __init__(self, url: str, key: str = QUEUE_KEY) -> None:
        self._redis = redis.Redis.from_url(url)
        self._key = key

    async def put(self, build_id: uuid.UUID) -> None:
        await self._redis.rpush(self._key, build_id.hex)

    async def get(self, timeout: float) -> uuid.UUID | None:
        # BLPOP's timeout is whole seconds (0 = forever): at least one.
        item = await self._redis.blpop([self._key], timeout=max(1, round(timeout)))
        if item is None:
            return None
        value = item[1]
        return uuid.UUID(hex=value.decode() if isinstance(value, bytes) else value)

    async def close(self) -> None:
        await self._redis.aclose()


def build_queue(redis_url: str | None) -> BuildQueue:
    return RedisQueue(redis_url) if redis_url else MemoryQueue()
