"""The PostgreSQL side of cache_sync.py: LISTEN for the other processes' cache-relevant writes
on a connection of its own, drop both caches when one is heard, and every
`cache_sync.HEARTBEAT` seconds send a notification of its own on that channel and wait to hear
it back, so the caches know how recent their knowledge is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

from . import auth_cache, cache_sync, capsule_routes
from .event_wakeups import Wake, listener_engine, listening_connection, reconnecting

APPLICATION_NAME = "wrenn-caches"
# Heartbeats' payloads start with this; the other processes' are ignored.
BEAT = "beat:"


def drop_all() -> None:
    auth_cache.drop_all()
    capsule_routes.drop_all()


class CacheListener:
    def __init__(self, url: str, *, timeout: float, backoff_max: float) -> None:
        self._timeout = timeout
        self._backoff_max = backoff_max
        self._task: asyncio.Task[None] | None = None
        self._engine = listener_engine(url, timeout=timeout, application_name=APPLICATION_NAME)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cache-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._engine.dispose()

    async def _run(self) -> None:
        try:
            await reconnecting("cache", self._session, drop_all, self._backoff_max)
        finally:
            cache_sync.lost()

    async def _session(self, connected: Wake) -> None:
        try:
            async with listening_connection(self._engine, self._timeout) as (pg, lost):
                echoed = asyncio.Event()
                beat = ""

                def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                    if payload == beat:
                        echoed.set()
                    elif payload != cache_sync.SENDER and not payload.startswith(BEAT):
                        drop_all()

                async with asyncio.timeout(self._timeout):
                    await pg.add_listener(cache_sync.CHANNEL, heard)
                connected()  # drops everything: what was written while no one listened
                for n in itertools.count():
                    if lost.is_set():
                        raise ConnectionError("the listening connection closed")
                    beat = f"{BEAT}{cache_sync.SENDER}.{n}"
                    echoed.clear()
                    sent_at = time.monotonic()
                    # The heartbeat is a notification this connection must hear back: those
                    # committed before it arrive first (PostgreSQL delivers them in commit
                    # order), and a silent or pooled connection that hears nothing never
                    # confirms.
                    async with asyncio.timeout(self._timeout):
                        await pg.execute(f"SELECT pg_notify('{cache_sync.CHANNEL}', '{beat}')")
                        await echoed.wait()
                    cache_sync.confirmed(sent_at)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(cache_sync.HEARTBEAT):
                            await lost.wait()
        finally:
            cache_sync.lost()
