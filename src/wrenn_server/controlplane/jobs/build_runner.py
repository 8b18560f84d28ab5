"""Running one template build: a capsule from the base template, the planned steps one by one
(`build_steps.py`; progress and a log entry per step written as it goes), then the start command
and healthcheck, and finally the template: a full snapshot when a healthcheck passed (memory
too: the started service is running in capsules made from it), otherwise an image (the root
filesystem flattened).

The build capsule belongs to the platform team and is destroyed at the end whatever happened,
with its own timeout. Cancelling cancels the task running the build: the agent call in flight is
abandoned and the capsule destroyed, which ends any process the step had started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ...agentproto.client import AgentClient
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..agents.rpc import agent_errors
from ..builds import archive_store
from ..builds.recipe import parse, plan
from ..db.models.capsules import Sandbox, Template, TemplateBuild
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import DomainError
from ..services import audit, capsules
from ..services.builds import forget_unrecorded_template, record_build_event
from ..services.capsules import CreateCapsule, Hosts
from .build_steps import BuildFailed, BuildSteps, Context

log = logging.getLogger(__name__)

CLEANUP_TIMEOUT = 60.0


class BuildRunner:
    def __init__(self, db: Database, hosts: Hosts, archives: Path) -> None:
        self.db = db
        self.hosts = hosts
        self.archives = archives

    def archive_path(self, build_id: uuid.UUID) -> Path:
        return self.archives / f"{build_id.hex}.archive"

    # Bookkeeping -------------------------------------------------------------------------------

    async def _update(self, build_id: uuid.UUID, **values: Any) -> None:
        async with self.db.sessionmaker() as session, transaction(session, write=True):
            build = await session.get(TemplateBuild, build_id)
            if build is not None:
                for key, value in values.items():
                    setattr(build, key, value)

    async def _log(self, build_id: uuid.UUID, step: int, entry: dict[str, Any]) -> None:
        async with self.db.sessionmaker() as session, transaction(session, write=True):
            build = await session.get(TemplateBuild, build_id)
            if build is not None:
                build.logs = [*build.logs, {"step": step, **entry}]  # a new list: JSON change
                build.current_step = step

    # The build --------------------------------------------------------------------------------

    async def run(self, build_id: uuid.UUID) -> None:
        """Run a claimed (running) build to its end: success, failed or cancelled."""
        async with self.db.sessionmaker() as session:
            build = await session.get(TemplateBuild, build_id)
        if build is None:
            return
        try:
            if build.archive_sha256 is not None:
                await self._fetch_archive(build.id, build.archive_sha256)
            async with self._capsule(build) as (sandbox, client):
                result = await self._steps(build, sandbox, client)
        except asyncio.CancelledError:
            # Cancelled by its admin (the row says so, and stays so) or by a shutdown.
            stopped = self._finish(
                build_id, "failed", error="interrupted: the control plane stopped"
            )
            await asyncio.shield(stopped)
            raise
        except BuildFailed as e:
            await self._finish(build_id, "failed", error=str(e))
        except DomainError as e:
            await self._finish(build_id, "failed", error=e.message)
        except Exception:
            log.exception("build %s failed", build_id)
            await self._finish(build_id, "failed", error="internal error")
        else:
            await self._finish(build_id, "success", result_type=result)

    async def _finish(self, build_id: uuid.UUID, status: str, **values: Any) -> None:
        async with self.db.sessionmaker() as session, transaction(session, write=True):
            build = await session.get(TemplateBuild, build_id)
            if build is None:
                return
            self.archive_path(build.id).unlink(missing_ok=True)
            if build.status == "failed":
                return  # failed by another process, which took this worker for dead
            # A cancelled build is reported cancelled, even if it raced to an end.
            if build.status == "cancelled":
                status, values = "cancelled", {"error": "cancelled"}
            build.status = status
            build.completed_at = utcnow()
            for key, value in values.items():
                setattr(build, key, value)
            if status == "success":
                build.error = None
            await archive_store.drop(session, build.id)
            level: audit.Status = "success" if status == "success" else "warning"
            await record_build_event(session, build, audit.SYSTEM, "build", level)

    async def _fetch_archive(self, build_id: uuid.UUID, sha256: str) -> None:
        try:
            await archive_store.fetch(self.db, build_id, sha256, self.archive_path(build_id))
        except archive_store.DamagedArchive as e:
            raise BuildFailed(str(e)) from None

    @contextlib.asynccontextmanager
    async def _capsule(self, build: TemplateBuild) -> AsyncIterator[tuple[Sandbox, AgentClient]]:
        spec = CreateCapsule(
            template=build.base_template,
            vcpus=build.vcpus,
            memory_mb=build.memory_mb,
            timeout_sec=0,
        )
        sandbox = await capsules.create_capsule(
            self.db, self.hosts, team_id=ids.PLATFORM_TEAM_ID, spec=spec, actor=audit.SYSTEM
        )
        wire_id = ids.SANDBOX.format(sandbox.id)
        await self._update(build.id, sandbox_id=sandbox.id)
        try:
            client = await capsules.running_client(
                self.db, self.hosts, ids.PLATFORM_TEAM_ID, wire_id
            )
            yield sandbox, client
        finally:
            destroy = capsules.destroy_capsule(
                self.db, self.hosts, ids.PLATFORM_TEAM_ID, wire_id, actor=audit.SYSTEM
            )
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(destroy, CLEANUP_TIMEOUT))
            # After the destroy, which the agent runs once a snapshot of the capsule ended: a
            # template made for a build that then did not end well is no template's.
            forget = forget_unrecorded_template(self.db, self.hosts, sandbox.host_id, build.name)
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(forget, CLEANUP_TIMEOUT))

    async def _steps(self, build: TemplateBuild, sandbox: Sandbox, client: AgentClient) -> str:
        wire_id = ids.SANDBOX.format(sandbox.id)
        steps = BuildSteps(
            client, wire_id, self.archive_path(build.id), functools.partial(self._log, build.id)
        )
        n = 0
        for n, step in enumerate(plan(parse(build.recipe), skip_pre_post=build.skip_pre_post), 1):
            await steps.step(n, step)
        if build.start_cmd:
            n += 1
            await steps.start(n, build.start_cmd)
        healthy = False
        if build.healthcheck:
            n += 1
            await steps.healthcheck(n, build.healthcheck)
            healthy = True
        ctx = steps.ctx
        await self._update(build.id, default_user=ctx.default_user, default_env=dict(ctx.env))
        return await self._produce(build, n + 1, sandbox, client, ctx, snapshot=healthy)

    async def _produce(
        self,
        build: TemplateBuild,
        n: int,
        sandbox: Sandbox,
        client: AgentClient,
        ctx: Context,
        *,
        snapshot: bool,
    ) -> str:
        wire_id = ids.SANDBOX.format(sandbox.id)
        kind = "snapshot" if snapshot else "image"
        started = utcnow()
        with agent_errors():
            if snapshot:
                request = pb.CreateSnapshotRequest(sandbox_id=wire_id, name=build.name)
                made = await client.create_snapshot(request, timeout=900)
            else:
                flat = pb.FlattenRootfsRequest(sandbox_id=wire_id, name=build.name)
                made = await client.flatten_rootfs(flat, timeout=900)
        async with self.db.sessionmaker() as session, transaction(session, write=True):
            # Failed by another process that took this worker for dead (and may have checked
            # for the template's files already) or cancelled: no row; the files are forgotten.
            status = await session.scalar(
                select(TemplateBuild.status).where(TemplateBuild.id == build.id)
            )
            if status != "running":
                raise BuildFailed("the build was stopped while its template was made")
            template = Template(
                name=build.name,
                storage_name=build.name,  # a platform template's files are stored by its name
                team_id=ids.PLATFORM_TEAM_ID,
                # An image template is what capsules boot from, as the platform's base is.
                type="snapshot" if snapshot else "base",
                host_id=sandbox.host_id,
                vcpus=build.vcpus,
                memory_mb=build.memory_mb,
                size_bytes=made.size_bytes,
                default_user=ctx.default_user,
                default_env=dict(ctx.env),
            )
            session.add(template)
        await self._log(
            build.id,
            n,
            {
                "cmd": f"TEMPLATE {build.name} ({kind})",
                "ok": True,
                "stdout": f"{made.size_bytes} bytes",
                "started_at": started.isoformat(),
                "finished_at": utcnow().isoformat(),
            },
        )
        return kind
