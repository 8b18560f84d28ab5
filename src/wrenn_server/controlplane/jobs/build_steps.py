"""The steps of one template build, run in its capsule: RUN, ENV, USER, WORKDIR and COPY as the
recipe plans them, the start command and the healthcheck. Each step writes its log entry through
the runner (`build_runner.py`); a failing one raises `BuildFailed`."""

from __future__ import annotations

import asyncio
import math
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ...agentproto.client import AgentClient
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from ..agents.rpc import agent_errors
from ..builds import archive
from ..builds.recipe import (
    DEFAULT_USER,
    Copy,
    Env,
    Run,
    Start,
    Step,
    User,
    Workdir,
    describe,
    parse_healthcheck,
)
from ..db.types import utcnow

STEP_TIMEOUT_SEC = 1800
HEALTHCHECK_TIMEOUT_SEC = 60.0
OUTPUT_KEPT = 16 * 1024  # the tail of each stream a log entry keeps
CHUNK = 1 << 20

# Writes step n's log entry (and makes n the build's current step).
StepLog = Callable[[int, dict[str, Any]], Awaitable[None]]


class BuildFailed(Exception):
    """A step failed; the message is safe to show (it goes into the build's `error`)."""


@dataclass
class Context:
    """What the steps so far have set up."""

    user: str = "root"
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)
    default_user: str = DEFAULT_USER


def _tail(data: bytes) -> str:
    return data[-OUTPUT_KEPT:].decode("utf-8", "replace")


@dataclass
class BuildSteps:
    """Runs one build's steps in its capsule (`wire_id`, through `client`); `archive_path` is
    the build's uploaded archive, which COPY reads."""

    client: AgentClient
    wire_id: str
    archive_path: Path
    log: StepLog
    ctx: Context = field(default_factory=Context)

    async def step(self, n: int, step: Step) -> None:
        ctx = self.ctx
        match step:
            case Run(command, as_root, timeout):
                user = "root" if as_root else ctx.user
                limit = STEP_TIMEOUT_SEC if timeout is None else max(1, round(timeout))
                await self.exec_step(n, describe(step), command, user, limit)
            case Start(command):
                await self.start(n, command)
            case Env(key, value):
                ctx.env[key] = value
                await self.log(n, {"cmd": describe(step), "ok": True})
            case User(name):
                if name != "root":
                    script = (
                        f"id -u {name} >/dev/null 2>&1 || useradd -m -s /bin/bash {name}; "
                        f"mkdir -p /etc/sudoers.d && "
                        f"echo '{name} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{name} && "
                        f"chmod 0440 /etc/sudoers.d/{name}"
                    )
                    await self.exec_step(n, describe(step), script, "root")
                else:
                    await self.log(n, {"cmd": describe(step), "ok": True})
                ctx.user = ctx.default_user = name
            case Workdir(path):
                script = f"mkdir -p {shlex.quote(path)}"
                if ctx.user != "root":
                    script += f" && chown {ctx.user}: {shlex.quote(path)}"
                await self.exec_step(n, describe(step), script, "root")
                ctx.cwd = path
            case Copy(src, dst):
                await self._copy(n, step, src, dst)

    async def start(self, n: int, start_cmd: str) -> None:
        """Start the template's service, detached, so that it survives the step."""
        quoted = shlex.quote(start_cmd)
        start = f"nohup setsid sh -c {quoted} >/tmp/wrenn-start.log 2>&1 </dev/null &"
        await self.exec_step(n, f"START {start_cmd}", start)

    async def exec(self, command: str, user: str, timeout: int) -> pb.ExecResponse:
        request = pb.ExecRequest(
            sandbox_id=self.wire_id,
            cmd=command,
            user=user,
            cwd=self.ctx.cwd,
            env=self.ctx.env,
            timeout_sec=timeout,
            # The agent keeps only the tail the log shows, not a step's whole output.
            max_output_bytes=OUTPUT_KEPT,
            keep_tail=True,
        )
        with agent_errors():
            res = await self.client.exec(request, timeout=timeout + 30)
        return res

    async def exec_step(
        self,
        n: int,
        label: str,
        command: str,
        user: str | None = None,
        timeout: int = STEP_TIMEOUT_SEC,
    ) -> None:
        started = utcnow()
        res = await self.exec(command, user or self.ctx.user, timeout)
        ok = res.exit_code == 0 and not res.timed_out
        await self.log(
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

    async def _copy(self, n: int, step: Copy, src: str, dst: str) -> None:
        path = self.archive_path
        if not path.is_file():
            raise BuildFailed(f"step {n} ({describe(step)}): the build has no archive")
        found = await asyncio.to_thread(archive.members, path)
        chosen = archive.select(found, src, dst)
        dirs = sorted({target for member, target in chosen if member.is_dir})
        files = [(member, target) for member, target in chosen if not member.is_dir]
        if dirs:
            mkdir = "mkdir -p " + " ".join(shlex.quote(d) for d in dirs)
            await self.exec(mkdir, "root", 60)
        await _write_files(self.client, self.wire_id, path, {m.path: t for m, t in files})
        owned = [dst] if self.ctx.user != "root" else []
        if owned:
            await self.exec(f"chown -R {self.ctx.user}: {shlex.quote(dst)}", "root", 300)
        await self.log(
            n, {"cmd": describe(step), "ok": True, "stdout": f"{len(files)} file(s) copied"}
        )

    async def healthcheck(self, n: int, command: str) -> None:
        """Run the healthcheck's command until it passes: for at most HEALTHCHECK_TIMEOUT_SEC
        after its start period, and at most its retries failures after it (if it sets any)."""
        check = parse_healthcheck(command)
        loop = asyncio.get_running_loop()
        counted_from = loop.time() + check.start_period_sec
        deadline = counted_from + HEALTHCHECK_TIMEOUT_SEC
        attempts = failures = 0
        while True:
            attempts += 1
            res = await self.exec(check.command, self.ctx.user, math.ceil(check.timeout_sec))
            if res.exit_code == 0 and not res.timed_out:
                await self.log(
                    n,
                    {
                        "cmd": f"HEALTHCHECK {command}",
                        "ok": True,
                        "attempts": attempts,
                        "stdout": _tail(res.stdout),
                    },
                )
                return
            failures += loop.time() >= counted_from
            out_of_retries = check.retries > 0 and failures >= check.retries
            if out_of_retries or loop.time() >= deadline:
                await self.log(
                    n,
                    {
                        "cmd": f"HEALTHCHECK {command}",
                        "ok": False,
                        "attempts": attempts,
                        "exit_code": res.exit_code,
                        "stdout": _tail(res.stdout),
                        "stderr": _tail(res.stderr),
                    },
                )
                if out_of_retries:
                    raise BuildFailed(f"healthcheck failed {failures} times")
                raise BuildFailed(f"healthcheck did not pass in {HEALTHCHECK_TIMEOUT_SEC:.0f} s")
            await asyncio.sleep(check.interval_sec)


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
