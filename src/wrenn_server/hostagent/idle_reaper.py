"""The TTL reaper: a running capsule idle for longer than its `timeout_sec` is paused (and
reported as auto-paused); one that cannot be paused is destroyed rather than left running.
A request or stream still open to its envd (a long command, a terminal) is activity: the quiet
period starts when the last one ends, so a capsule is never paused under a running command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Protocol

from . import errors
from .capsule import RUNNING, Capsule

log = logging.getLogger(__name__)


class Lifecycle(Protocol):
    """The capsules the reaper looks at and what it does to them."""

    @property
    def capsules(self) -> Mapping[str, Capsule]: ...

    async def pause(self, sandbox_id: str, auto: bool = False) -> Capsule: ...

    async def destroy(self, sandbox_id: str) -> None: ...

    def in_use(self, sandbox_id: str) -> int: ...


class IdleReaper:
    def __init__(self, lifecycle: Lifecycle, interval_sec: float) -> None:
        self.lifecycle = lifecycle
        self.interval_sec = interval_sec

    async def run(self) -> None:
        """Reap every `interval_sec` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_sec)
            try:
                await self.reap_idle()
            except Exception:
                log.exception("TTL reaper iteration failed")

    async def reap_idle(self) -> None:
        now = time.time()
        timed = [
            c for c in self.lifecycle.capsules.values() if c.status == RUNNING and c.timeout_sec > 0
        ]
        for capsule in timed:
            if self.lifecycle.in_use(capsule.sandbox_id) > 0:
                capsule.touch()
        idle = [c for c in timed if now - c.last_active_at > c.timeout_sec]
        for capsule in idle:
            # Detached from any request: shutdown or a cancelled caller must not cut a pause short.
            await asyncio.shield(asyncio.ensure_future(self._auto_pause(capsule)))

    async def _auto_pause(self, capsule: Capsule) -> None:
        try:
            await self.lifecycle.pause(capsule.sandbox_id, auto=True)
            log.info("auto-paused idle %s", capsule.sandbox_id)
        except (errors.InvalidState, errors.NotFound):
            pass  # paused, died or destroyed by someone else meanwhile: nothing to reap
        except Exception:
            log.exception("auto-pause of %s failed; destroying it", capsule.sandbox_id)
            with contextlib.suppress(errors.NotFound):
                await self.lifecycle.destroy(capsule.sandbox_id)
