"""The PostgreSQL side of cache_sync.py: LISTEN for the other processes' cache-relevant writes
on a connection of its own, drop both caches when one is heard, and ask the connection for a
heartbeat every `cache_sync.HEARTBEAT` seconds so the caches know how recent their knowledge is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from . import auth_cache, cache_sync, capsule_routes
from .event_wakeups import Wake, listener_engine, listening_connection, reconnecting

APPLICATION_NAME = "wrenn-caches"


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

                def heard(_conn: object, _pid: int, _channel: str, sender: str) -> None:
                    if sender != cache_sync.SENDER:
                        drop_all()

                async with asyncio.timeout(self._timeout):
                    await pg.add_listener(cache_sync.CHANNEL, heard)
                connected()  # drops everything: what was written while no one listened
                while not lost.is_set():
                    sent_at = time.monotonic()
                    # A half-open connection never says it is gone: ask.
                    async with asyncio.timeout(self._timeout):
                        await pg.execute("SELECT 1")
                    # Notifications that came with the answer are handed to `heard` first.
                    await asyncio.sleep(0)
                    cache_sync.confirmed(sent_at)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(cache_sync.HEARTBEAT):
                            await lost.wait()
                raise ConnectionError("the listening connection closed")
        finally:
            cache_sync.lost()
