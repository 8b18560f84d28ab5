"""Running one template build: a capsule from the base template, the planned steps one by one
(progress and a log entry per step written as it goes), then the start command and healthcheck,
and finally the template: a full snapshot when a healthcheck passed (memory too: the started
service is running in capsules made from it), otherwise an image (the root filesystem flattened).

The build capsule belongs to the platform team and is destroyed at the end whatever happened,
with its own timeout. Cancelling cancels the task running the build: the agent call in flight is
abandoned and the capsule destroyed, which ends any process the step had started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ...agentproto.client import AgentClient
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..agents.rpc import agent_errors
from ..builds import archive, archive_store
from ..builds.recipe import DEFAULT_USER, Copy, Env, Run, Step, User, Workdir, describe, parse, plan
from ..db.models.capsules import Sandbox, Template, TemplateBuild
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import DomainError
from ..services import audit, capsules
from ..services.builds import record_build_event
from ..services.capsules import CreateCapsule, Hosts

log = logging.getLogger(__name__)

STEP_TIMEOUT_SEC = 1800
HEALTHCHECK_TIMEOUT_SEC = 60.0
HEALTHCHECK_ATTEMPT_SEC = 10
CLEANUP_TIMEOUT = 60.0
OUTPUT_KEPT = 16 * 1024  # the tail of each stream a log entry keeps
CHUNK = 1 << 20


class BuildFailed(Exception):
    """A step failed; the message is safe to show (it goes into the build's `error`)."""


@dataclass
class _Context:
    """What the steps so far have set up."""

    user: str = "root"
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)
    default_user: str = DEFAULT_USER


def _tail(data: bytes) -> str:
    return data[-OUTPUT_KEPT:].decode("utf-8", "replace")


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

    async def _steps(self, build: TemplateBuild, sandbox: Sandbox, client: AgentClient) -> str:
        wire_id = ids.SANDBOX.format(sandbox.id)
        steps = plan(parse(build.recipe), skip_pre_post=build.skip_pre_post)
        ctx = _Context()
        n = 0
        for n, step in enumerate(steps, start=1):
            await self._step(build.id, n, step, ctx, wire_id, client)
        if build.start_cmd:
            n += 1
            quoted = shlex.quote(build.start_cmd)
            start = f"nohup setsid sh -c {quoted} >/tmp/wrenn-start.log 2>&1 </dev/null &"
            await self._exec_step(
                build.id, n, f"START {build.start_cmd}", start, ctx, wire_id, client
            )
        healthy = False
        if build.healthcheck:
            n += 1
            await self._healthcheck(build, n, ctx, wire_id, client)
            healthy = True
        await self._update(build.id, default_user=ctx.default_user, default_env=dict(ctx.env))
        return await self._produce(build, n + 1, sandbox, client, ctx, snapshot=healthy)

    async def _step(
        self,
        build_id: uuid.UUID,
        n: int,
        step: Step,
        ctx: _Context,
        wire_id: str,
        client: AgentClient,
    ) -> None:
        match step:
            case Run(command, as_root):
                user = "root" if as_root else ctx.user
                await self._exec_step(
                    build_id, n, describe(step), command, ctx, wire_id, client, user
                )
            case Env(key, value):
                ctx.env[key] = value
                await self._log(build_id, n, {"cmd": describe(step), "ok": True})
            case User(name):
                if name != "root":
                    script = (
                        f"id -u {name} >/dev/null 2>&1 || useradd -m -s /bin/bash {name}; "
                        f"mkdir -p /etc/sudoers.d && "
                        f"echo '{name} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{name} && "
                        f"chmod 0440 /etc/sudoers.d/{name}"
                    )
                    await self._exec_step(
                        build_id, n, describe(step), script, ctx, wire_id, client, "root"
                    )
                else:
                    await self._log(build_id, n, {"cmd": describe(step), "ok": True})
                ctx.user = ctx.default_user = name
            case Workdir(path):
                script = f"mkdir -p {shlex.quote(path)}"
                if ctx.user != "root":
                    script += f" && chown {ctx.user}: {shlex.quote(path)}"
                await self._exec_step(
                    build_id, n, describe(step), script, ctx, wire_id, client, "root"
                )
                ctx.cwd = path
            case Copy(src, dst):
                await self._copy(build_id, n, step, src, dst, ctx, wire_id, client)

    async def _exec(
        self,
        client: AgentClient,
        wire_id: str,
        command: str,
        ctx: _Context,
        user: str,
        timeout: int,
    ) -> pb.ExecResponse:
        request = pb.ExecRequest(
            sandbox_id=wire_id,
            cmd=command,
            user=user,
            cwd=ctx.cwd,
            env=ctx.env,
            timeout_sec=timeout,
            # The agent keeps only the tail the log shows, not a step's whole output.
            max_output_bytes=OUTPUT_KEPT,
            keep_tail=True,
        )
        with agent_errors():
            res = await client.exec(request, timeout=timeout + 30)
        return res

    async def _exec_step(
        self,
        build_id: uuid.UUID,
        n: int,
        label: str,
        command: str,
        ctx: _Context,
        wire_id: str,
        client: AgentClient,
        user: str | None = None,
    ) -> None:
        started = utcnow()
        res = await self._exec(client, wire_id, command, ctx, user or ctx.user, STEP_TIMEOUT_SEC)
        ok = res.exit_code == 0 and not res.timed_out
        await self._log(
            build_id,
            n,
            {
                "cmd": label,
                "ok": ok,
                "exit_code": res.exit_code,
                "stdout": _tail(res.stdout),
                "stderr": _tail(res.stderr),
                "started_at": started.isoformat(),
                "finished_at": utcnow().isoformat(),
            },
        )
        if not ok:
            why = "timed out" if res.timed_out else f"exited with {res.exit_code}"
            raise BuildFailed(f"step {n} ({label[:200]}) {why}")

    async def _copy(
        self,
        build_id: uuid.UUID,
        n: int,
        step: Copy,
        src: str,
        dst: str,
        ctx: _Context,
        wire_id: str,
        client: AgentClient,
    ) -> None:
        path = self.archive_path(build_id)
        if not path.is_file():
            raise BuildFailed(f"step {n} ({describe(step)}): the build has no archive")
        found = await asyncio.to_thread(archive.members, path)
        chosen = archive.select(found, src, dst)
        dirs = sorted({target for member, target in chosen if member.is_dir})
        files = [(member, target) for member, target in chosen if not member.is_dir]
        if dirs:
            mkdir = "mkdir -p " + " ".join(shlex.quote(d) for d in dirs)
            await self._exec(client, wire_id, mkdir, ctx, "root", 60)
        await _write_files(client, wire_id, path, {m.path: target for m, target in files})
        owned = [dst] if ctx.user != "root" else []
        if owned:
            await self._exec(
                client, wire_id, f"chown -R {ctx.user}: {shlex.quote(dst)}", ctx, "root", 300
            )
        await self._log(
            build_id,
            n,
            {"cmd": describe(step), "ok": True, "stdout": f"{len(files)} file(s) copied"},
        )

    async def _healthcheck(
        self, build: TemplateBuild, n: int, ctx: _Context, wire_id: str, client: AgentClient
    ) -> None:
        assert build.healthcheck
        deadline = asyncio.get_running_loop().time() + HEALTHCHECK_TIMEOUT_SEC
        attempts = 0
        while True:
            attempts += 1
            res = await self._exec(
                client, wire_id, build.healthcheck, ctx, ctx.user, HEALTHCHECK_ATTEMPT_SEC
            )
            if res.exit_code == 0 and not res.timed_out:
                await self._log(
                    build.id,
                    n,
                    {
                        "cmd": f"HEALTHCHECK {build.healthcheck}",
                        "ok": True,
                        "attempts": attempts,
                        "stdout": _tail(res.stdout),
                    },
                )
                return
            if asyncio.get_running_loop().time() >= deadline:
                await self._log(
                    build.id,
                    n,
                    {
                        "cmd": f"HEALTHCHECK {build.healthcheck}",
                        "ok": False,
                        "attempts": attempts,
                        "exit_code": res.exit_code,
                        "stdout": _tail(res.stdout),
                        "stderr": _tail(res.stderr),
                    },
                )
                raise BuildFailed(f"healthcheck did not pass in {HEALTHCHECK_TIMEOUT_SEC:.0f} s")
            await asyncio.sleep(1)

    async def _produce(
        self,
        build: TemplateBuild,
        n: int,
        sandbox: Sandbox,
        client: AgentClient,
        ctx: _Context,
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
            template = Template(
                name=build.name,
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


async def _write_files(
    client: AgentClient, wire_id: str, path: Path, wanted: dict[str, str]
) -> None:
    """Stream the wanted archive members into the capsule, reading the archive once in a
    worker thread (a member at a time, a chunk at a time)."""
    files = archive.iter_files(path, wanted)
    try:
        while (item := await asyncio.to_thread(next, files, None)) is not None:
            target, mode, reader = item

            async def chunks(reader: IO[bytes] = reader) -> AsyncIterator[bytes]:
                while chunk := await asyncio.to_thread(reader.read, CHUNK):
                    yield chunk

            header = pb.WriteFileStreamRequest.Header(
                sandbox_id=wire_id, path=target, user="root", mode=mode
            )
            await client.write_file_stream(header, chunks())
    finally:
        await asyncio.to_thread(files.close)
