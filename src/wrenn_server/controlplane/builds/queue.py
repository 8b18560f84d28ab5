"""The build queue: build ids in, build ids out, in order. Redis (RPUSH/BLPOP on one list) when
`WRENN_REDIS_URL` is set, so several control plane processes share it; otherwise in-process."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

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
    """Every command is bounded: a Redis that accepts connections but never answers makes
    `put` fail within the timeouts (the route answers 503) instead of hanging the request."""

    def __init__(
        self,
        url: str,
        key: str = QUEUE_KEY,
        *,
        connect_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        health_check_interval: float = 30.0,
    ) -> None:
        options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "health_check_interval": health_check_interval,
            # No retries: a failed command is reported at once, the timeouts stay the bound.
            "retry": Retry(NoBackoff(), 0),
        }
        self._redis = redis.Redis.from_url(url, socket_timeout=socket_timeout, **options)
        # BLPOP blocks by design: its client reads without a socket timeout, each call is
        # bounded below by its own wait plus the socket timeout instead.
        self._blocking = redis.Redis.from_url(url, socket_timeout=None, **options)
        self._socket_timeout = socket_timeout
        self._key = key

    async def put(self, build_id: uuid.UUID) -> None:
        await self._redis.rpush(self._key, build_id.hex)

    async def get(self, timeout: float) -> uuid.UUID | None:
        # BLPOP's timeout is whole seconds (0 = forever): at least one.
        wait = max(1, round(timeout))
        try:
            async with asyncio.timeout(wait + self._socket_timeout):
                item = await self._blocking.blpop([self._key], timeout=wait)
        except TimeoutError:
            # The interrupted connection is dropped by the client, not reused.
            raise RedisTimeoutError("Redis did not answer BLPOP in time") from None
        if item is None:
            return None
        value = item[1]
        return uuid.UUID(hex=value.decode() if isinstance(value, bytes) else value)

    async def close(self) -> None:
        await self._redis.aclose()
        await self._blocking.aclose()


def build_queue(
    redis_url: str | None,
    *,
    connect_timeout: float = 5.0,
    socket_timeout: float = 5.0,
    health_check_interval: float = 30.0,
) -> BuildQueue:
    if not redis_url:
        return MemoryQueue()
    return RedisQueue(
        redis_url,
        connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=health_check_interval,
    )
