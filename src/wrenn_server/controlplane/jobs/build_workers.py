"""The build worker pool: `workers` tasks take build ids from the queue and run them.

Any number of control plane processes may run workers on one database and one Redis queue. A
worker claims a build with a conditional update (pending -> running), so a build queued twice
(after a restart, or by two processes) runs once, and a build cancelled while queued is skipped.
While a build runs, its worker polls the row each second: once it says anything but `running`
(cancelled by an admin, failed by another process) the build's task is cancelled; and every few
seconds it renews `heartbeat_at`. Every
pool fails the running builds whose heartbeat is older than a minute - their process died -
destroys their capsules and deletes a template their agent made with no row for it (the answer
was lost with the process), so the name is free for the build again. At start a pool also puts
every pending build back in the queue (an in-process queue forgets them on restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import and_, or_, select, update

from .. import ids
from ..builds import archive_store
from ..builds.queue import BuildQueue
from ..db.models.capsules import Sandbox, TemplateBuild
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..services import audit, capsules
from ..services.builds import forget_unrecorded_template, record_build_event
from .build_runner import BuildRunner

log = logging.getLogger(__name__)

POLL_SEC = 1.0
HEARTBEAT_SEC = 5.0
STALE_AFTER_SEC = 60.0
REAP_EVERY_SEC = 15.0
CLEANUP_TIMEOUT = 60.0


@dataclass
class Builds:
    """What the build routes and the app need: the queue, where archives go, the workers."""

    queue: BuildQueue
    archives: Path
    max_archive_bytes: int
    workers: BuildWorkers


class BuildWorkers:
    def __init__(
        self,
        db: Database,
        queue: BuildQueue,
        runner: BuildRunner,
        workers: int,
        stale_after_sec: float = STALE_AFTER_SEC,
    ) -> None:
        self.db = db
        self.queue = queue
        self.runner = runner
        self.workers = workers
        self.stale_after_sec = stale_after_sec
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.workers <= 0:
            return
        async with self.db.sessionmaker() as session:
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
        self._tasks.append(asyncio.create_task(self._reap_forever(), name="build-reaper"))

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
            if not getattr(claimed, "rowcount", 0):
                return False
            build = await session.get(TemplateBuild, build_id)
            if build is not None:
                await record_build_event(session, build, audit.SYSTEM, "build_start", "info")
            return True

    async def _run(self, build_id: uuid.UUID) -> None:
        task = asyncio.create_task(self.runner.run(build_id), name=f"build-{build_id}")
        last_beat = time.monotonic()
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=POLL_SEC)
                if task.done():
                    break
                beat = time.monotonic() - last_beat >= HEARTBEAT_SEC
                if beat:
                    last_beat = time.monotonic()
                # Cancelled by an admin, or failed by another process that took this one
                # for dead: either way, stop.
                if await self._poll(build_id, beat=beat) != "running":
                    task.cancel()
        finally:
            task.cancel()  # a no-op once done; on shutdown, the build stops with the worker
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self, build_id: uuid.UUID, *, beat: bool) -> str | None:
        """The build's status, renewing its heartbeat first if `beat`."""
        if beat:
            async with self.db.sessionmaker() as session, transaction(session, write=True):
                await session.execute(
                    update(TemplateBuild)
                    .where(TemplateBuild.id == build_id, TemplateBuild.status == "running")
                    .values(heartbeat_at=utcnow())
                )
        async with self.db.sessionmaker() as session:
            status: str | None = await session.scalar(
                select(TemplateBuild.status).where(TemplateBuild.id == build_id)
            )
        return status

    async def _reap_forever(self) -> None:
        while True:
            try:
                await self.reap_stale()
            except Exception:
                log.exception("reaping stale builds failed")
            await asyncio.sleep(REAP_EVERY_SEC)

    async def reap_stale(self) -> list[uuid.UUID]:
        """Fail the running builds nobody has renewed for `stale_after_sec`, and destroy their
        capsules. Returns their ids."""
        limit = utcnow() - dt.timedelta(seconds=self.stale_after_sec)
        quiet = or_(
            TemplateBuild.heartbeat_at < limit,
            and_(TemplateBuild.heartbeat_at.is_(None), TemplateBuild.started_at < limit),
        )
        # (build, its template's name, its capsule and that capsule's host)
        reaped: list[tuple[uuid.UUID, str, uuid.UUID | None, uuid.UUID | None]] = []
        async with self.db.sessionmaker() as session, transaction(session, write=True):
            rows = await session.scalars(
                select(TemplateBuild).where(TemplateBuild.status == "running", quiet)
            )
            for build in rows:
                build.status = "failed"
                build.error = "interrupted: the control plane running it stopped"
                build.completed_at = utcnow()
                await archive_store.drop(session, build.id)
                await record_build_event(session, build, audit.SYSTEM, "build", "warning")
                host_id = None
                if build.sandbox_id is not None:
                    host_id = await session.scalar(
                        select(Sandbox.host_id).where(Sandbox.id == build.sandbox_id)
                    )
                reaped.append((build.id, build.name, build.sandbox_id, host_id))
        for build_id, name, sandbox_id, host_id in reaped:
            log.warning("build %s failed: its worker went quiet", build_id)
            if sandbox_id is not None:
                await self._destroy(sandbox_id)
                await forget_unrecorded_template(self.db, self.runner.hosts, host_id, name)
        return [build_id for build_id, *_ in reaped]

    async def _destroy(self, sandbox_id: uuid.UUID) -> None:
        destroy = capsules.destroy_capsule(
            self.db,
            self.runner.hosts,
            ids.PLATFORM_TEAM_ID,
            ids.SANDBOX.format(sandbox_id),
            actor=audit.SYSTEM,
        )
        try:
            await asyncio.wait_for(destroy, CLEANUP_TIMEOUT)
        except Exception as e:  # gone already, or its host is down: the reconciler has it
            log.warning("capsule of a stale build not destroyed: %s", e)
