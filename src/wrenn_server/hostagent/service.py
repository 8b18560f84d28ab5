"""gRPC servicer of the HostAgent contract: translate messages (messages.py), delegate to the
manager; credentials and error mapping are rpc_guard.py's. No logic of its own."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Any

from ..proto.hostagent.v1 import hostagent_pb2 as pb
from ..proto.hostagent.v1 import hostagent_pb2_grpc as pb_grpc
from . import capacity, errors, tunnel
from .capsule_spec import CreateSpec
from .envd_client import LIST_LIMIT
from .exec_output import ExecOutput, output_limit
from .manager import SandboxManager
from .messages import (
    entry_msg,
    event_msg,
    fs_event_msg,
    metrics_msg,
    port_msg,
    process_msg,
    process_spec,
    sandbox_msg,
    template_msg,
)
from .rpc_guard import Ctx, streaming, unary

MAX_UNARY_FILE = 64 * 1024 * 1024


class HostAgentService(pb_grpc.HostAgentServicer):
    def __init__(self, manager: SandboxManager, secret: str) -> None:
        self.m = manager
        # The host's versions every capsule reports (the runtime's is read at start-up).
        self.versions: dict[str, str] = {}
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

    def explain(self, request: Any, error: Exception) -> Exception:
        return self.m.explain(request, error)

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
        return sandbox_msg(await self.m.create(spec), self.versions)

    @unary
    async def GetSandbox(self, r: pb.SandboxRef, context: Ctx) -> pb.Sandbox:
        return sandbox_msg(self.m.get(r.sandbox_id), self.versions)

    @unary
    async def ListSandboxes(
        self, r: pb.ListSandboxesRequest, context: Ctx
    ) -> pb.ListSandboxesResponse:
        capsules = list(self.m.capsules.values())
        have = capacity.resources(self.m.settings.data_dir)
        return pb.ListSandboxesResponse(
            sandboxes=[
                sandbox_msg(c, self.versions, c.handle in self.m.doze.dozing) for c in capsules
            ],
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
        return sandbox_msg(await self.m.pause(r.sandbox_id), self.versions)

    @unary
    async def ResumeSandbox(self, r: pb.ResumeSandboxRequest, context: Ctx) -> pb.Sandbox:
        timeout = r.timeout_sec if r.HasField("timeout_sec") else None
        capsule = await self.m.resume(r.sandbox_id, timeout, r.default_user, dict(r.default_env))
        return sandbox_msg(capsule, self.versions)

    @unary
    async def PauseAll(self, r: pb.Empty, context: Ctx) -> pb.PauseAllResponse:
        paused, failed = await self.m.pause_all()
        return pb.PauseAllResponse(paused_sandbox_ids=paused, failed_sandbox_ids=failed)

    @unary
    async def GetSandboxMetrics(self, r: pb.SandboxRef, context: Ctx) -> pb.SandboxMetrics:
        return metrics_msg(self.m.metrics_of(r.sandbox_id))

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
        async for ev in self.m.envd(r.sandbox_id).start_process(process_spec(r)):
            yield event_msg(ev)

    @streaming
    async def ConnectProcess(
        self, r: pb.ProcessRef, context: Ctx
    ) -> AsyncIterator[pb.ProcessEvent]:
        async for ev in self.m.envd(r.sandbox_id).connect(r.pid):
            yield event_msg(ev)

    @unary
    async def ListProcesses(self, r: pb.SandboxRef, context: Ctx) -> pb.ListProcessesResponse:
        procs = await self.m.envd(r.sandbox_id).list_processes()
        return pb.ListProcessesResponse(processes=[process_msg(p) for p in procs])

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

    @streaming
    async def WatchDir(self, r: pb.WatchDirRequest, context: Ctx) -> AsyncIterator[pb.FsEvent]:
        async for ev in self.m.envd(r.sandbox_id).watch_dir(r.path, r.recursive, r.user or None):
            yield fs_event_msg(ev)

    # -- templates -------------------------------------------------------------------------

    @unary
    async def CreateSnapshot(self, r: pb.CreateSnapshotRequest, context: Ctx) -> pb.Template:
        return template_msg(await self.m.create_snapshot(r.sandbox_id, r.name, r.overwrite))

    @unary
    async def FlattenRootfs(self, r: pb.FlattenRootfsRequest, context: Ctx) -> pb.Template:
        return template_msg(await self.m.flatten(r.sandbox_id, r.name, r.overwrite))

    @unary
    async def DeleteSnapshot(self, r: pb.DeleteSnapshotRequest, context: Ctx) -> pb.Empty:
        await self.m.delete_template(r.name)
        return pb.Empty()

    @unary
    async def ListTemplates(self, r: pb.Empty, context: Ctx) -> pb.ListTemplatesResponse:
        return pb.ListTemplatesResponse(templates=[template_msg(t) for t in self.m.templates.all()])

    # -- ports -----------------------------------------------------------------------------

    @streaming
    async def Tunnel(
        self, requests: AsyncIterator[pb.TunnelFrame], context: Ctx
    ) -> AsyncIterator[pb.TunnelFrame]:
        it = requests.__aiter__()
        first = await anext(it, None)
        if first is None or first.WhichOneof("frame") != "open":
            raise errors.InvalidArgument("the first frame must be open")
        sandbox_id, port = first.open.sandbox_id, first.open.port
        if not 1 <= port <= 65535:
            raise errors.InvalidArgument("port must be an integer from 1 to 65535")
        client = self.m.envd(sandbox_id)
        reader, writer = await client.open_tunnel(port)
        capsule = self.m.get(sandbox_id)
        with client.using():  # an open tunnel keeps the capsule awake (doze.py)
            yield pb.TunnelFrame(opened=True)
            async for frame in tunnel.relay(it, reader, writer, capsule.touch):
                yield frame

    @unary
    async def ListPorts(self, r: pb.SandboxRef, context: Ctx) -> pb.ListPortsResponse:
        ports = await self.m.envd(r.sandbox_id, activity=False).list_ports()
        return pb.ListPortsResponse(ports=[port_msg(p) for p in ports])
