"""gRPC servicer of the HostAgent contract: translate messages, delegate to the manager, and map
domain errors to status codes. No logic of its own."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ..proto.hostagent.v1 import hostagent_pb2 as pb
from ..proto.hostagent.v1 import hostagent_pb2_grpc as pb_grpc
from . import capacity, errors
from .capsule import DEAD, PAUSED, RUNNING, Capsule, validate_sandbox_id
from .envd_client import LIST_LIMIT, Event
from .exec_output import ExecOutput, output_limit
from .manager import CreateSpec, SandboxManager
from .templates import SNAPSHOT, Template, validate_name

log = logging.getLogger(__name__)

Ctx = Any  # grpc.aio.ServicerContext (grpc ships no type information)

# One table from domain errors to wire codes; anything else is INTERNAL with a generic message.
STATUS: dict[type[errors.AgentError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidState: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Timeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

MAX_UNARY_FILE = 64 * 1024 * 1024
CHUNK = 256 * 1024


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls], str(exc)
    log.error("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


async def _authenticate(service: HostAgentService, context: Ctx) -> None:
    if not service.authorized(context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid agent credentials")


# Request fields that name things on disk, checked before any handler sees them.
_VALIDATORS: dict[str, Callable[[str], str]] = {
    "sandbox_id": validate_sandbox_id,
    "name": validate_name,
    "template": validate_name,
}


def check_names(request: Any) -> None:
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    for field, validate in _VALIDATORS.items():
        if field in fields and (value := getattr(request, field)):
            validate(value)


def unary(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(self: HostAgentService, request: Any, context: Ctx) -> Any:
        await _authenticate(self, context)
        try:
            check_names(request)
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await context.abort(*status_for(self.m.explain(request, e)))

    return wrapper


def streaming(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(fn)
    async def wrapper(self: HostAgentService, request: Any, context: Ctx) -> AsyncIterator[Any]:
        await _authenticate(self, context)
        try:
            check_names(request)
            async for item in fn(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await context.abort(*status_for(self.m.explain(request, e)))

    return wrapper


def ts(epoch: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(epoch * 1e9))
    return t


def sandbox_msg(c: Capsule) -> pb.Sandbox:
    status = {
        RUNNING: pb.SANDBOX_STATUS_RUNNING,
        PAUSED: pb.SANDBOX_STATUS_PAUSED,
        DEAD: pb.SANDBOX_STATUS_DEAD,
    }
    return pb.Sandbox(
        sandbox_id=c.sandbox_id,
        status=status.get(c.status, pb.SANDBOX_STATUS_STARTING),
        template=c.template,
        vcpus=c.vcpus,
        memory_mb=c.memory_mb,
        disk_size_mb=c.disk_size_mb,
        timeout_sec=c.timeout_sec,
        created_at=ts(c.created_at),
        last_active_at=ts(c.last_active_at),
        auto_paused=c.auto_paused,
        exit_reason=c.exit_reason,
    )


def template_msg(t: Template) -> pb.Template:
    kind = pb.TEMPLATE_TYPE_SNAPSHOT if t.type == SNAPSHOT else pb.TEMPLATE_TYPE_IMAGE
    return pb.Template(
        name=t.name,
        type=kind,
        size_bytes=t.size_bytes,
        created_at=ts(t.created_at),
        base=t.base or "",
    )


def entry_msg(e: dict[str, Any]) -> pb.FileEntry:
    return pb.FileEntry(
        name=e["name"],
        path=e["path"],
        type=e["type"],
        size=e["size"],
        mode=e["mode"],
        permissions=e["permissions"],
        owner=e["owner"],
        group=e["group"],
        modified_at=ts(e["modified_at"]),
        symlink_target=e.get("symlink_target") or "",
    )


def event_msg(ev: Event) -> pb.ProcessEvent:
    kind = ev["type"]
    if kind == "start":
        return pb.ProcessEvent(start=pb.ProcessEvent.Start(pid=ev["pid"]))
    if kind == "stdout":
        return pb.ProcessEvent(stdout=ev["data"])
    if kind == "stderr":
        return pb.ProcessEvent(stderr=ev["data"])
    return pb.ProcessEvent(
        exit=pb.ProcessEvent.Exit(exit_code=ev["exit_code"], signal=ev.get("signal") or 0)
    )


def process_spec(r: pb.ExecRequest) -> dict[str, Any]:
    if not r.cmd and not r.argv:
        raise errors.InvalidArgument("cmd or argv is required")
    return {
        "cmd": r.argv[0] if r.argv else r.cmd,
        "args": list(r.argv[1:]) if r.argv else None,
        "env": dict(r.env) or None,
        "cwd": r.cwd or None,
        "user": r.user or None,
        "stdin": r.stdin,
        "pty": {"cols": r.pty.cols, "rows": r.pty.rows} if r.HasField("pty") else None,
        "tag": r.tag or None,
    }


class HostAgentService(pb_grpc.HostAgentServicer):
    def __init__(self, manager: SandboxManager, secret: str) -> None:
        self.m = manager
        self.set_secret(secret)

    def set_secret(self, secret: str) -> None:
        """The secret callers must present; a registered host's changes when the control plane
        rotates its key."""
        self._secret = f"Bearer {secret}".encode()

    def authorized(self, context: Ctx) -> bool:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                raw = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(raw, self._secret)
        return False

    # -- lifecycle -------------------------------------------------------------------------

    @unary
    async def CreateSandbox(self, r: pb.CreateSandboxRequest, context: Ctx) -> pb.Sandbox:
        spec = CreateSpec(
            sandbox_id=r.sandbox_id,
            template=r.template,
            vcpus=r.vcpus,
            memory_mb=r.memory_mb,
            disk_size_mb=r.disk_size_mb,
            timeout_sec=r.timeout_sec,
            default_user=r.default_user,
            default_env=dict(r.default_env),
        )
        return sandbox_msg(await self.m.create(spec))

    @unary
    async def GetSandbox(self, r: pb.SandboxRef, context: Ctx) -> pb.Sandbox:
        return sandbox_msg(self.m.get(r.sandbox_id))

    @unary
    async def ListSandboxes(self, r: pb.ListSandboxesRequest, context: Ctx) -> Any:
        capsules = list(self.m.capsules.values())
        have = capacity.resources(self.m.settings.data_dir)
        return pb.ListSandboxesResponse(
            sandboxes=[sandbox_msg(c) for c in capsules],
            auto_paused_sandbox_ids=[c.sandbox_id for c in capsules if c.auto_paused],
            resources=pb.HostResources(
                cpu_count=have.cpu_count,
                memory_mb=have.memory_mb,
                disk_free_mb=have.disk_free_mb,
            ),
        )

    @unary
    async def DestroySandbox(self, r: pb.SandboxRef, context: Ctx) -> pb.Empty:
        await self.m.destroy(r.sandbox_id)
        return pb.Empty()

    @unary
    async def PingSandbox(self, r: pb.SandboxRef, context: Ctx) -> pb.Empty:
        self.m.ping(r.sandbox_id)
        return pb.Empty()

    @unary
    async def PauseSandbox(self, r: pb.SandboxRef, context: Ctx) -> pb.Sandbox:
        return sandbox_msg(await self.m.pause(r.sandbox_id))

    @unary
    async def ResumeSandbox(self, r: pb.ResumeSandboxRequest, context: Ctx) -> pb.Sandbox:
        timeout = r.timeout_sec if r.HasField("timeout_sec") else None
        capsule = await self.m.resume(r.sandbox_id, timeout, r.default_user, dict(r.default_env))
        return sandbox_msg(capsule)

    @unary
    async def PauseAll(self, r: pb.Empty, context: Ctx) -> pb.PauseAllResponse:
        paused, failed = await self.m.pause_all()
        return pb.PauseAllResponse(paused_sandbox_ids=paused, failed_sandbox_ids=failed)

    @unary
    async def GetSandboxMetrics(self, r: pb.SandboxRef, context: Ctx) -> pb.SandboxMetrics:
        tiers = self.m.metrics_of(r.sandbox_id)
        return pb.SandboxMetrics(
            tiers=[
                pb.MetricTier(
                    name=name,
                    points=[
                        pb.MetricPoint(
                            timestamp_ms=int(p.ts * 1000),
                            cpu_pct=p.cpu_pct,
                            mem_bytes=p.mem_bytes,
                            disk_bytes=p.disk_bytes,
                        )
                        for p in points
                    ],
                )
                for name, points in tiers.items()
            ]
        )

    # -- processes -------------------------------------------------------------------------

    @unary
    async def Exec(self, r: pb.ExecRequest, context: Ctx) -> pb.ExecResponse:
        output = ExecOutput(output_limit(r.max_output_bytes), r.keep_tail)
        res = await self.m.exec(r.sandbox_id, process_spec(r), r.timeout_sec, output)
        return pb.ExecResponse(
            pid=res.pid,
            exit_code=res.exit_code,
            stdout=res.stdout,
            stderr=res.stderr,
            signal=res.signal,
            timed_out=res.timed_out,
            stdout_truncated=res.stdout_truncated,
            stderr_truncated=res.stderr_truncated,
        )

    @streaming
    async def ExecStream(self, r: pb.ExecRequest, context: Ctx) -> AsyncIterator[pb.ProcessEvent]:
        async for ev in self.m.exec_stream(r.sandbox_id, process_spec(r)):
            yield event_msg(ev)

    @streaming
    async def ConnectProcess(
        self, r: pb.ProcessRef, context: Ctx
    ) -> AsyncIterator[pb.ProcessEvent]:
        async for ev in self.m.connect(r.sandbox_id, r.pid):
            yield event_msg(ev)

    @unary
    async def ListProcesses(self, r: pb.SandboxRef, context: Ctx) -> Any:
        procs = await self.m.envd(r.sandbox_id).list_processes()
        return pb.ListProcessesResponse(
            processes=[
                pb.ProcessInfo(
                    pid=p["pid"],
                    cmd=p["cmd"],
                    args=p.get("args") or [],
                    cwd=p.get("cwd") or "",
                    user=p.get("user") or "",
                    tag=p.get("tag") or "",
                    pty=bool(p.get("pty")),
                    running=bool(p["running"]),
                    exit_code=p.get("exit_code"),
                    started_at=ts(p["started_at"]),
                )
                for p in procs
            ]
        )

    @unary
    async def SendStdin(self, r: pb.SendStdinRequest, context: Ctx) -> pb.Empty:
        await self.m.envd(r.sandbox_id).send_stdin(r.pid, r.data)
        return pb.Empty()

    @unary
    async def CloseStdin(self, r: pb.ProcessRef, context: Ctx) -> pb.Empty:
        await self.m.envd(r.sandbox_id).close_stdin(r.pid)
        return pb.Empty()

    @unary
    async def SignalProcess(self, r: pb.SignalProcessRequest, context: Ctx) -> pb.Empty:
        if not 1 <= r.signal <= 64:
            raise errors.InvalidArgument("signal must be between 1 and 64")
        await self.m.envd(r.sandbox_id).signal(r.pid, r.signal)
        return pb.Empty()

    @unary
    async def ResizePty(self, r: pb.ResizePtyRequest, context: Ctx) -> pb.Empty:
        await self.m.envd(r.sandbox_id).resize(r.pid, r.size.cols, r.size.rows)
        return pb.Empty()

    # -- files -----------------------------------------------------------------------------

    @unary
    async def ReadFile(self, r: pb.FileRef, context: Ctx) -> pb.ReadFileResponse:
        client = self.m.envd(r.sandbox_id)
        entry = await client.stat(r.path, r.user or None)
        if entry["size"] > MAX_UNARY_FILE:
            raise errors.InvalidArgument("file is larger than 64 MiB: use ReadFileStream")
        data = bytearray()
        async for chunk in client.read_file(r.path, r.user or None):
            data += chunk
            if len(data) > MAX_UNARY_FILE:  # it grew after the stat
                raise errors.InvalidArgument("file is larger than 64 MiB: use ReadFileStream")
        return pb.ReadFileResponse(data=bytes(data))

    @streaming
    async def ReadFileStream(self, r: pb.FileRef, context: Ctx) -> AsyncIterator[pb.FileChunk]:
        async for chunk in self.m.envd(r.sandbox_id).read_file(r.path, r.user or None):
            yield pb.FileChunk(data=chunk)

    @unary
    async def WriteFile(self, r: pb.WriteFileRequest, context: Ctx) -> pb.FileEntry:
        client = self.m.envd(r.sandbox_id)
        entry = await client.write_file(r.path, r.data, r.user or None, r.mode or None)
        return entry_msg(entry)

    @unary
    async def WriteFileStream(
        self, requests: AsyncIterator[pb.WriteFileStreamRequest], context: Ctx
    ) -> pb.FileEntry:
        it = requests.__aiter__()
        first = await it.__anext__()
        if not first.HasField("header"):
            raise errors.InvalidArgument("the first message must be the header")
        h = first.header
        client = self.m.envd(h.sandbox_id)

        async def body() -> AsyncIterator[bytes]:
            async for msg in it:
                if msg.WhichOneof("part") == "end":
                    return
                if msg.chunk:
                    yield msg.chunk
            # Raising mid-body makes the HTTP client abort the upload, so envd discards it.
            raise errors.InvalidArgument("the upload stopped before its end: nothing was written")

        entry = await client.write_file(h.path, body(), h.user or None, h.mode or None)
        return entry_msg(entry)

    @unary
    async def ListDir(self, r: pb.ListDirRequest, context: Ctx) -> pb.ListDirResponse:
        limit = min(r.limit or LIST_LIMIT, LIST_LIMIT)
        listing = await self.m.envd(r.sandbox_id).list_dir(
            r.path, r.depth or 1, r.user or None, limit=limit, after=r.after
        )
        return pb.ListDirResponse(
            entries=[entry_msg(e) for e in listing.entries],
            truncated=listing.truncated,
            next_cursor=listing.next_cursor,
        )

    @unary
    async def Stat(self, r: pb.FileRef, context: Ctx) -> pb.FileEntry:
        return entry_msg(await self.m.envd(r.sandbox_id).stat(r.path, r.user or None))

    @unary
    async def MakeDir(self, r: pb.FileRef, context: Ctx) -> pb.FileEntry:
        return entry_msg(await self.m.envd(r.sandbox_id).mkdir(r.path, r.user or None))

    @unary
    async def Move(self, r: pb.MoveRequest, context: Ctx) -> pb.FileEntry:
        client = self.m.envd(r.sandbox_id)
        return entry_msg(await client.move(r.source, r.destination, r.user or None))

    @unary
    async def Remove(self, r: pb.FileRef, context: Ctx) -> pb.Empty:
        await self.m.envd(r.sandbox_id).remove(r.path, r.user or None)
        return pb.Empty()

    # -- templates -------------------------------------------------------------------------

    @unary
    async def CreateSnapshot(self, r: pb.CreateSnapshotRequest, context: Ctx) -> pb.Template:
        return template_msg(await self.m.create_snapshot(r.sandbox_id, r.name, r.overwrite))

    @unary
    async def FlattenRootfs(self, r: pb.FlattenRootfsRequest, context: Ctx) -> pb.Template:
        return template_msg(await self.m.flatten(r.sandbox_id, r.name, r.overwrite))

    @unary
    async def DeleteSnapshot(self, r: pb.DeleteSnapshotRequest, context: Ctx) -> pb.Empty:
        self.m.delete_template(r.name)
        return pb.Empty()

    @unary
    async def ListTemplates(self, r: pb.Empty, context: Ctx) -> pb.ListTemplatesResponse:
        return pb.ListTemplatesResponse(templates=[template_msg(t) for t in self.m.templates.all()])
