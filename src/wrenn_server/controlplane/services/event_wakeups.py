"""Wake-ups that tell every control plane process's event hub at once that events were written.

A wake-up carries nothing: the hub then reads the events table from its last id, so the table
stays the source of truth and a lost wake-up only delays an event until the hub's slow poll.

- `local`: this process's own commits only (`events.on_commit`); one process on SQLite.
- `postgres`: each event's transaction runs `pg_notify` (`events.record_from_audit`), delivered
  by PostgreSQL at commit; every process LISTENs on a connection of its own.
- `redis`: a process that committed events PUBLISHes once (coalesced); every process SUBSCRIBEs.

Each wake-up carries its sender's name (`events.sender_of` the engine that committed); a
listener skips its own process's (`own`): its hub was woken by the commit hook already.

Listeners reconnect after any failure with exponential backoff, bound each connection attempt
and liveness check by `timeout`, wake the hub after each (re)connection (events written while
it was away), and close their connection when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from .events import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

REDIS_CHANNEL = "wrenn:events"
APPLICATION_NAME = "wrenn-events"
CHECK_EVERY = 15.0  # an idle listener's liveness check, seconds
FIRST_BACKOFF = 0.5

Wake = Callable[[], None]


class Wakeups(Protocol):
    async def listen(self, wake: Wake) -> None:
        """Call `wake` on every wake-up (and after each connection) until cancelled."""
        ...

    def committed(self) -> None:
        """This process committed events: tell the other processes (if the database does not)."""
        ...

    async def close(self) -> None: ...


class LocalWakeups:
    """No other process to hear from: the hub wakes on its own commits and polls."""

    async def listen(self, wake: Wake) -> None:
        await asyncio.Event().wait()

    def committed(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def reconnecting(
    name: str, session: Callable[[Wake], Awaitable[None]], wake: Wake, backoff_max: float
) -> None:
    """Run `session` (one connection's life) again and again, waiting longer after each
    failed attempt; a session that got connected starts the backoff afresh."""
    backoff = FIRST_BACKOFF
    while True:
        connected = False

        def woken() -> None:
            nonlocal connected
            connected = True
            wake()

        try:
            await session(woken)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("%s listener lost: %s; reconnecting", name, e)
        if connected:
            backoff = FIRST_BACKOFF
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, backoff_max)


def listener_engine(url: str, *, timeout: float, application_name: str) -> AsyncEngine:
    """An engine for one LISTENing connection held for good (NullPool: never pooled)."""
    return create_async_engine(
        url,
        poolclass=NullPool,
        connect_args={
            "timeout": timeout,
            "server_settings": {"application_name": application_name},
        },
    )


@contextlib.asynccontextmanager
async def listening_connection(
    engine: AsyncEngine, timeout: float
) -> AsyncIterator[tuple[Any, asyncio.Event]]:
    """A connection of `engine` (asyncpg's own, to LISTEN on) and an event set when it is
    lost; closed on the way out, which ends its LISTENs."""
    async with asyncio.timeout(timeout):
        conn = await engine.connect()
    try:
        raw = await conn.get_raw_connection()
        pg: Any = raw.driver_connection  # asyncpg.Connection
        lost = asyncio.Event()
        pg.add_termination_listener(lambda _conn: lost.set())
        yield pg, lost
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await conn.invalidate()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await conn.close()


class PostgresWakeups:
    """LISTEN on a connection of its own (not the pool's: it is held for good)."""

    def __init__(self, url: str, *, timeout: float, backoff_max: float, own: str = "") -> None:
        self._timeout = timeout
        self._backoff_max = backoff_max
        self._own = own
        self._engine = listener_engine(url, timeout=timeout, application_name=APPLICATION_NAME)

    async def listen(self, wake: Wake) -> None:
        await reconnecting("event wake-up (postgres)", self._session, wake, self._backoff_max)

    async def _session(self, wake: Wake) -> None:
        async with listening_connection(self._engine, self._timeout) as (pg, lost):
            async with asyncio.timeout(self._timeout):

                def heard(_conn: object, _pid: int, _channel: str, sender: str) -> None:
                    if not (self._own and sender == self._own):
                        wake()

                await pg.add_listener(NOTIFY_CHANNEL, heard)
            wake()  # what was written while no one listened
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CHECK_EVERY):
                        await lost.wait()
                if not lost.is_set():
                    # A half-open connection never says it is gone: ask.
                    async with asyncio.timeout(self._timeout):
                        await pg.execute("SELECT 1")
            raise ConnectionError("the listening connection closed")

    def committed(self) -> None:
        pass  # the event's transaction notified

    async def close(self) -> None:
        await self._engine.dispose()


class RedisWakeups:
    """SUBSCRIBE on one connection; PUBLISH once per burst of commits on another."""

    def __init__(self, url: str, *, timeout: float, backoff_max: float, own: str = "") -> None:
        self._url = url
        self._timeout = timeout
        self._backoff_max = backoff_max
        self._own = own.encode()
        self._publisher = self._client()
        self._pending = False
        self._publishing: asyncio.Task[None] | None = None

    def _client(self, *, retry: Retry | None = None) -> redis.Redis:
        options: dict[str, Any] = {} if retry is None else {"retry": retry}
        return redis.Redis.from_url(
            self._url, socket_connect_timeout=self._timeout, socket_timeout=self._timeout, **options
        )

    async def listen(self, wake: Wake) -> None:
        await reconnecting("event wake-up (redis)", self._session, wake, self._backoff_max)

    async def _session(self, wake: Wake) -> None:
        # No silent reconnection inside the client: what was published meanwhile would be
        # missed without a wake-up. A lost connection ends this session instead.
        client = self._client(retry=Retry(NoBackoff(), 0))
        pubsub = client.pubsub()
        try:
            async with asyncio.timeout(self._timeout):
                await pubsub.subscribe(REDIS_CHANNEL)
            wake()  # what was written while no one listened
            heard = time.monotonic()
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=min(CHECK_EVERY, self._timeout))
                now = time.monotonic()
                if message is not None:
                    heard, pinged = now, False
                    mine = self._own and message.get("data") == self._own
                    if message.get("type") == "message" and not mine:
                        wake()
                elif now - heard > CHECK_EVERY + self._timeout and pinged:
                    raise ConnectionError("Redis did not answer a ping")
                elif now - heard > CHECK_EVERY and not pinged:
                    # A half-open connection never says it is gone: its pong is a message.
                    async with asyncio.timeout(self._timeout):
                        await pubsub.ping()
                    pinged = True
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await client.aclose()

    def committed(self) -> None:
        """Called on the event loop after a commit; one PUBLISH at a time, the next one
        covering every commit made while the first was sent."""
        self._pending = True
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.get_running_loop().create_task(
                self._publish(), name="event-wakeup-publish"
            )

    async def _publish(self) -> None:
        while self._pending:
            self._pending = False
            try:
                async with asyncio.timeout(self._timeout):
                    await self._publisher.publish(REDIS_CHANNEL, self._own)
            except Exception as e:
                # The others read the event at their next poll.
                log.warning("event wake-up not published to Redis: %s", e)
                return

    async def close(self) -> None:
        if self._publishing is not None:
            self._publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._publishing
        with contextlib.suppress(Exception):
            await self._publisher.aclose()


def wakeups_for(
    kind: str,
    *,
    database_url: str,
    redis_url: str | None,
    timeout: float,
    backoff_max: float,
    own: str = "",
) -> Wakeups:
    """The wake-ups of `kind`; `own`: the name this process's wake-ups carry."""
    if kind == "postgres":
        return PostgresWakeups(database_url, timeout=timeout, backoff_max=backoff_max, own=own)
    if kind == "redis":
        if not redis_url:
            raise ValueError("redis wake-ups need a Redis URL")
        return RedisWakeups(redis_url, timeout=timeout, backoff_max=backoff_max, own=own)
    return LocalWakeups()
