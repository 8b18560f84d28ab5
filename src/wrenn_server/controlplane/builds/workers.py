"""The build worker pool: `workers` tasks take build ids from the queue and run them.

A worker claims a build with a conditional update (pending -> running), so a build queued twice
(after a restart, or by two control planes sharing Redis) runs once, and a build cancelled while
queued is skipped. While a build runs, a watcher polls its row each second: once it says
`cancelled` (from any control plane process) the build's task is cancelled.

At start the pool puts every pending build back in the queue (the in-process queue forgets them
on restart) and fails the builds left `running` by a previous process. Builds therefore assume
one control plane process runs workers (WRENN_BUILD_WORKERS=0 on the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update

from ..db.models.capsules import TemplateBuild
from ..db.session import Database, transaction
from ..db.types import utcnow
from .queue import BuildQueue
from .runner import BuildRunner

log = logging.getLogger(__name__)

POLL_SEC = 1.0


@dataclass
class Builds:
    """What the build routes and the app need: the queue, where archives go, the workers."""

    queue: BuildQueue
    archives: Path
    max_archive_bytes: int
    workers: BuildWorkers


class BuildWorkers:
    def __init__(self, db: Database, queue: BuildQueue, runner: BuildRunner, workers: int) -> None:
        self.db = db
        self.queue = queue
        self.runner = runner
        self.workers = workers
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.workers <= 0:
            return
        async with self.db.sessionmaker() as session, transaction(session, write=True):
            await session.execute(
                update(TemplateBuild)
                .where(TemplateBuild.status == "running")
                .values(status="failed", error="interrupted by a restart", completed_at=utcnow())
            )
            pending = list(
                await session.scalars(
                    select(TemplateBuild.id)
                    .where(TemplateBuild.status == "pending")
                    .order_by(TemplateBuild.created_at)
                )
            )
        for build_id in pending:
            await self.queue.put(build_id)
        self._tasks = [
            asyncio.create_task(self._work(), name=f"build-worker-{i}") for i in range(self.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _work(self) -> None:
        while True:
            try:
                build_id = await self.queue.get(timeout=5)
                if build_id is not None and await self._claim(build_id):
                    await self._run(build_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("build worker iteration failed")
                await asyncio.sleep(1)

    async def _claim(self, build_id: uuid.UUID) -> bool:
        async with self.db.sessionmaker() as session, transaction(session, write=True):
            claimed = await session.execute(
                update(TemplateBuild)
                .where(TemplateBuild.id == build_id, TemplateBuild.status == "pending")
                .values(status="running", started_at=utcnow())
            )
            return bool(getattr(claimed, "rowcount", 0))

    async def _run(self, build_id: uuid.UUID) -> None:
        task = asyncio.create_task(self.runner.run(build_id), name=f"build-{build_id}")
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=POLL_SEC)
                if not task.done() and await self._cancelled(build_id):
                    task.cancel()
        finally:
            task.cancel()  # a no-op once done; on shutdown, the build stops with the worker
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _cancelled(self, build_id: uuid.UUID) -> bool:
        async with self.db.sessionmaker() as session:
            status = await session.scalar(
                select(TemplateBuild.status).where(TemplateBuild.id == build_id)
            )
        return status == "cancelled"
