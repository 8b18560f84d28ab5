"""Capsules whose sandbox dies on its own (out of memory, a crash): each new sandbox's process
is watched (reaper.SandboxWatch); within a moment of an exit the agent did not cause, the
capsule's network, mounts and runsc state are released and it stays, DEAD with the reason, for
the control plane to see and destroy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .capsule import DEAD, RUNNING, Capsule
from .capsule_table import CapsuleTable
from .pool import Pooled, WarmPool
from .reaper import SandboxWatch
from .runtime import CLEANUP_TIMEOUT, Runtime

log = logging.getLogger(__name__)

# Finding a new sandbox's pid to watch: tries, and the wait between them.
WATCH_ATTEMPTS = 5
WATCH_RETRY_SEC = 1.0


class DeathWatch:
    def __init__(
        self,
        table: CapsuleTable,
        runtime: Runtime,
        pool: WarmPool,
        discard_pooled: Callable[[Pooled], Awaitable[None]],
    ) -> None:
        self.table = table
        self.runtime = runtime
        self.pool = pool
        self._discard_pooled = discard_pooled
        # The pid watched per capsule handle, and a boot count so a late answer about an
        # earlier sandbox is not taken for the current.
        self._watch: SandboxWatch | None = None
        self._sandbox_pids: dict[str, int] = {}
        self._boots: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._watch = SandboxWatch(self._sandbox_exit)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._watch is not None:
            self._watch.close()

    def watch(self, capsule: Capsule) -> None:
        """Watch the capsule's new sandbox for dying, off the caller's path (asking runsc for
        its pid takes a moment)."""
        boot = self._boots[capsule.handle] = self._boots.get(capsule.handle, 0) + 1
        self._spawn(self._watch_pid(capsule, boot), "watch-sandbox")

    def watching(self, capsule: Capsule) -> bool:
        """Whether the capsule's sandbox process is being watched (its pid was found)."""
        return self._watch is not None and self._watch.watching(capsule.handle)

    def unwatch(self, capsule: Capsule) -> None:
        self._sandbox_pids.pop(capsule.handle, None)
        self._boots.pop(capsule.handle, None)
        if self._watch is not None:
            self._watch.unwatch(capsule.handle)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_pid(self, capsule: Capsule, boot: int) -> None:
        handle = capsule.handle
        for _attempt in range(WATCH_ATTEMPTS):
            try:
                pid = await self.runtime.sandbox_pid(capsule)
            except Exception:
                log.exception("cannot ask for the sandbox of %s", capsule.sandbox_id)
                pid = None
            if self._watch is None or self._boots.get(handle) != boot or capsule.net is None:
                return  # stopped since, or booted again: a later task watches that one
            if pid is not None:
                self._sandbox_pids[handle] = pid
                self._watch.watch(handle, pid)
                return
            if not self.runtime.sandbox_running(capsule):
                # It died before it could be watched: an exit all the same.
                self._sandbox_pids[handle] = 0
                self._sandbox_exit(handle, 0)
                return
            await asyncio.sleep(WATCH_RETRY_SEC)
        log.warning("the sandbox of %s cannot be watched", capsule.sandbox_id)

    def _sandbox_exit(self, handle: str, pid: int) -> None:
        self._spawn(self._sandbox_exited(handle, pid), "sandbox-exited")

    async def _sandbox_exited(self, handle: str, pid: int) -> None:
        """A watched sandbox exited. If the agent did not stop it (pause, destroy: they hold
        the capsule's lock, and change its status), it died: its network, mounts and runsc
        state are released, and the capsule stays, DEAD with the reason, for the control plane
        to see and destroy. Calls in flight fail (`explain` says why), later ones are refused."""
        if self._sandbox_pids.get(handle) != pid:
            return
        capsules = self.table.capsules
        capsule = next((c for c in capsules.values() if c.handle == handle), None)
        if capsule is None:
            pooled = self.pool.drop(handle)
            if pooled is not None:
                log.warning("a pooled capsule's sandbox died; booting another")
                self.unwatch(pooled.capsule)
                await self._discard_pooled(pooled)
            return
        async with self.table.lock(capsule.sandbox_id):
            current = capsules.get(capsule.sandbox_id) is capsule
            if not current or capsule.status != RUNNING or self._sandbox_pids.get(handle) != pid:
                return
            self._sandbox_pids.pop(handle, None)
            capsule.exit_reason = self.runtime.exit_reason(capsule)
            capsule.status = DEAD
            capsule.save()
            log.warning("capsule %s died: %s", capsule.sandbox_id, capsule.exit_reason)
            await self.table.disconnect(capsule.sandbox_id)
            try:
                await asyncio.shield(
                    asyncio.wait_for(self.runtime.teardown(capsule), CLEANUP_TIMEOUT)
                )
            except Exception:
                log.exception("teardown of dead %s failed", capsule.sandbox_id)
            capsule.save()
