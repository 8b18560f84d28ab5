"""The fake host agent: the real gRPC servicer interface (`HostAgentServicer`) over in-memory
capsules, processes, files and templates.

It authenticates as the agent does (`authorization: Bearer <secret>` metadata, else
UNAUTHENTICATED), checks sandbox ids and template names as the agent does (INVALID_ARGUMENT),
and answers with the agent's status codes: NOT_FOUND for an unknown capsule, process, file or
template, ALREADY_EXISTS, FAILED_PRECONDITION for the wrong state (exec on a paused capsule,
anything but destroy on a dead one). `calls` records the methods called, in order; `faults`
injects failures (faults.py). Tests change the world as a host would: `kill` (the sandbox died),
`forget` (the agent lost it), `reap_idle` (the TTL reaper; also run by the server's loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb
from wrenn_server.proto.hostagent.v1 import hostagent_pb2_grpc as pb_grpc

from .errors import Refused, exists, invalid, not_found, wrong_state
from .faults import Faults
from .files import DEFAULT_USER, FileTree
from .guards import Ctx, admit, streaming, unary
from .processes import Spec
from .programs import PROGRAMS, Program, main
from .sandbox import (
    IMAGE,
    PAUSED,
    RUNNING,
    SNAPSHOT,
    VERSIONS,
    FakeSandbox,
    FakeTemplate,
    check_name,
    check_sandbox_id,
    new_sandbox_id,
)
from .tunnel import open_port, relay

BASE_TEMPLATE = "minimal"
MAX_UNARY_FILE = 64 * 1024 * 1024
CHUNK = 256 * 1024
DEFAULT_MAX_OUTPUT = 1 << 20
MAX_OUTPUT = 16 << 20
LIST_LIMIT = 10000


class FakeHostAgent(pb_grpc.HostAgentServicer):
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.templates: dict[str, FakeTemplate] = {
            BASE_TEMPLATE: FakeTemplate(BASE_TEMPLATE, IMAGE, default_user=DEFAULT_USER)
        }
        self.programs: dict[str, Program] = dict(PROGRAMS)
        self.faults = Faults()
        self.calls: list[str] = []
        # What capsules started or resumed from now on report of the versions that run them.
        self.versions: dict[str, str] = dict(VERSIONS)
        # What ListSandboxes says of the host; None: nothing (as an older agent).
        self.resources: pb.HostResources | None = pb.HostResources(
            cpu_count=8, memory_mb=16384, disk_free_mb=200_000
        )

    # -- the world changing under the agent ------------------------------------------------

    def adopt(self, sandbox_id: str, status: str = RUNNING) -> FakeSandbox:
        """A capsule the agent holds without having been asked here (a restarted agent adopts
        the capsules it finds)."""
        base = self.templates[BASE_TEMPLATE]
        sandbox = FakeSandbox.of(base, check_sandbox_id(sandbox_id), self.programs, status=status)
        self.sandboxes[sandbox_id] = sandbox
        return sandbox

    def kill(self, sandbox_id: str, reason: str = "out of memory") -> None:
        """The capsule's sandbox dies on its own (memory limit, crash)."""
        self.sandboxes[sandbox_id].die(reason)

    def forget(self, sandbox_id: str) -> None:
        """The agent no longer knows the capsule (its host lost it)."""
        self.sandboxes.pop(sandbox_id).discard()

    def reap_idle(self) -> list[str]:
        """Auto-pause running capsules idle longer than their timeout, as the TTL reaper does."""
        now = time.time()
        idle = [
            s
            for s in self.sandboxes.values()
            if s.status == RUNNING and s.timeout_sec > 0 and now - s.last_active_at > s.timeout_sec
        ]
        for sandbox in idle:
            sandbox.status, sandbox.auto_paused = PAUSED, True
        return [s.sandbox_id for s in idle]

    # -- plumbing --------------------------------------------------------------------------

    def get(self, sandbox_id: str) -> FakeSandbox:
        check_sandbox_id(sandbox_id)
        try:
            return self.sandboxes[sandbox_id]
        except KeyError:
            raise not_found(f"sandbox {sandbox_id} not found") from None

    def running(self, sandbox_id: str, activity: bool = True) -> FakeSandbox:
        sandbox = self.get(sandbox_id)
        sandbox.require_running(activity)
        return sandbox

    def _path(self, sandbox_id: str, path: str, user: str) -> tuple[str, str]:
        """A file operation's path and who it acts as: the request's user, else the capsule's
        default (as envd); a relative path starts at that user's home."""
        user = user or self.get(sandbox_id).default_user or "root"
        return FileTree.resolve(path, user), user

    def template(self, name: str) -> FakeTemplate:
        try:
            return self.templates[check_name(name)]
        except KeyError:
            raise not_found(f"template {name!r} not found") from None

    # -- lifecycle -------------------------------------------------------------------------

    @unary
    async def CreateSandbox(self, r: pb.CreateSandboxRequest, context: Ctx) -> pb.Sandbox:
        sandbox_id = check_sandbox_id(r.sandbox_id or new_sandbox_id())
        if sandbox_id in self.sandboxes:
            raise exists(f"sandbox {sandbox_id} already exists")
        template = self.template(r.template or BASE_TEMPLATE)
        snap = template.type == SNAPSHOT
        vcpus = (template.vcpus if snap else 0) or r.vcpus or 1
        memory = (template.memory_mb if snap else 0) or r.memory_mb or 512
        disk = (template.disk_size_mb if snap else 0) or r.disk_size_mb or 5120
        if not 1 <= vcpus <= 64:
            raise invalid("vcpus must be between 1 and 64")
        if not 64 <= memory <= 262144:
            raise invalid("memory_mb must be between 64 and 262144")
        if r.timeout_sec < 0:
            raise invalid("timeout_sec must not be negative")
        sandbox = FakeSandbox.of(
            template,
            sandbox_id,
            self.programs,
            vcpus=vcpus,
            memory_mb=memory,
            disk_size_mb=disk,
            timeout_sec=r.timeout_sec,
            # The template's default user unless the caller names one (the agent sends an
            # image's to envd; a snapshot's envd still holds the one it was taken with).
            default_user=r.default_user or template.default_user,
            default_env=dict(r.default_env),
        )
        sandbox.versions = dict(self.versions)
        self.sandboxes[sandbox_id] = sandbox
        return sandbox.message()

    @unary
    async def GetSandbox(self, r: pb.SandboxRef, context: Ctx) -> pb.Sandbox:
        return self.get(r.sandbox_id).message()

    @unary
    async def ListSandboxes(
        self, r: pb.ListSandboxesRequest, context: Ctx
    ) -> pb.ListSandboxesResponse:
        sandboxes = list(self.sandboxes.values())
        response = pb.ListSandboxesResponse(
            sandboxes=[s.message() for s in sandboxes],
            auto_paused_sandbox_ids=[s.sandbox_id for s in sandboxes if s.auto_paused],
        )
        if self.resources is not None:
            response.resources.CopyFrom(self.resources)
        return response

    @unary
    async def DestroySandbox(self, r: pb.SandboxRef, context: Ctx) -> pb.Empty:
        self.get(r.sandbox_id)
        self.sandboxes.pop(r.sandbox_id).discard()
        return pb.Empty()

    @unary
    async def PingSandbox(self, r: pb.SandboxRef, context: Ctx) -> pb.Empty:
        self.get(r.sandbox_id).touch()
        return pb.Empty()

    @unary
    async def PauseSandbox(self, r: pb.SandboxRef, context: Ctx) -> pb.Sandbox:
        sandbox = self.get(r.sandbox_id)
        if sandbox.status != RUNNING:
            raise wrong_state(f"sandbox {sandbox.sandbox_id} is {sandbox.status}, not running")
        sandbox.status, sandbox.auto_paused = PAUSED, False
        return sandbox.message()

    @unary
    async def ResumeSandbox(self, r: pb.ResumeSandboxRequest, context: Ctx) -> pb.Sandbox:
        sandbox = self.get(r.sandbox_id)
        if sandbox.status != PAUSED:
            raise wrong_state(f"sandbox {sandbox.sandbox_id} is {sandbox.status}, not paused")
        if r.HasField("timeout_sec"):
            sandbox.timeout_sec = r.timeout_sec
        sandbox.default_user = r.default_user or sandbox.default_user
        sandbox.default_env = dict(r.default_env or sandbox.default_env)
        sandbox.status, sandbox.auto_paused = RUNNING, False
        sandbox.versions = dict(self.versions)
        sandbox.touch()
        return sandbox.message()

    @unary
    async def PauseAll(self, r: pb.Empty, context: Ctx) -> pb.PauseAllResponse:
        paused = [s for s in self.sandboxes.values() if s.status == RUNNING]
        for sandbox in paused:
            sandbox.status, sandbox.auto_paused = PAUSED, True
        return pb.PauseAllResponse(paused_sandbox_ids=[s.sandbox_id for s in paused])

    @unary
    async def GetSandboxMetrics(self, r: pb.SandboxRef, context: Ctx) -> pb.SandboxMetrics:
        sandbox = self.get(r.sandbox_id)
        point = pb.MetricPoint(
            timestamp_ms=int(time.time() * 1000),
            cpu_pct=1.0,
            mem_bytes=sandbox.memory_mb << 18,
            disk_bytes=4096,
        )
        return pb.SandboxMetrics(
            tiers=[pb.MetricTier(name=name, points=[point]) for name in ("10m", "2h", "24h")]
        )

    # -- processes -------------------------------------------------------------------------

    def _spec(self, r: pb.ExecRequest) -> Spec:
        if not r.cmd and not r.argv:
            raise invalid("cmd or argv is required")
        return Spec(
            argv=list(r.argv) if r.argv else ["/bin/sh", "-c", r.cmd],
            env=dict(r.env),
            cwd=r.cwd,
            user=r.user,
            tag=r.tag,
            stdin=r.stdin,
            pty=(r.pty.cols, r.pty.rows) if r.HasField("pty") else None,
            shell=not r.argv,
        )

    @unary
    async def Exec(self, r: pb.ExecRequest, context: Ctx) -> pb.ExecResponse:
        sandbox = self.get(r.sandbox_id)
        proc = sandbox.start(self._spec(r), main)
        timed_out = False
        try:
            async with asyncio.timeout(r.timeout_sec or None):
                async for _ev in proc.events():
                    pass
        except TimeoutError:
            timed_out = True
            proc.kill(9)
        limit = min(r.max_output_bytes or DEFAULT_MAX_OUTPUT, MAX_OUTPUT)
        stdout = b"".join(d for k, d in proc.output if k == "stdout")
        stderr = b"".join(d for k, d in proc.output if k == "stderr")

        def cut(data: bytes) -> bytes:
            return data[-limit:] if r.keep_tail else data[:limit]

        sandbox.touch()
        return pb.ExecResponse(
            pid=proc.pid,
            exit_code=proc.exit_code if proc.exit_code is not None else -1,
            stdout=cut(stdout),
            stderr=cut(stderr),
            signal=proc.signal,
            timed_out=timed_out,
            stdout_truncated=len(stdout) > limit,
            stderr_truncated=len(stderr) > limit,
        )

    @streaming
    async def ExecStream(self, r: pb.ExecRequest, context: Ctx) -> AsyncIterator[pb.ProcessEvent]:
        proc = self.get(r.sandbox_id).start(self._spec(r), main)
        async for ev in proc.events():
            yield ev

    @streaming
    async def ConnectProcess(
        self, r: pb.ProcessRef, context: Ctx
    ) -> AsyncIterator[pb.ProcessEvent]:
        async for ev in self.get(r.sandbox_id).process(r.pid).events():
            yield ev

    @unary
    async def ListProcesses(self, r: pb.SandboxRef, context: Ctx) -> pb.ListProcessesResponse:
        sandbox = self.running(r.sandbox_id)
        return pb.ListProcessesResponse(processes=[p.info() for p in sandbox.processes.values()])

    @unary
    async def SendStdin(self, r: pb.SendStdinRequest, context: Ctx) -> pb.Empty:
        self.get(r.sandbox_id).process(r.pid).send_stdin(r.data)
        return pb.Empty()

    @unary
    async def CloseStdin(self, r: pb.ProcessRef, context: Ctx) -> pb.Empty:
        self.get(r.sandbox_id).process(r.pid).close_stdin()
        return pb.Empty()

    @unary
    async def SignalProcess(self, r: pb.SignalProcessRequest, context: Ctx) -> pb.Empty:
        if not 1 <= r.signal <= 64:
            raise invalid("signal must be between 1 and 64")
        self.get(r.sandbox_id).process(r.pid).kill(r.signal)
        return pb.Empty()

    @unary
    async def ResizePty(self, r: pb.ResizePtyRequest, context: Ctx) -> pb.Empty:
        self.get(r.sandbox_id).process(r.pid).resize(r.size.cols, r.size.rows)
        return pb.Empty()

    # -- files -----------------------------------------------------------------------------

    def _files(self, sandbox_id: str) -> FileTree:
        return self.running(sandbox_id).files

    @unary
    async def ReadFile(self, r: pb.FileRef, context: Ctx) -> pb.ReadFileResponse:
        path, _user = self._path(r.sandbox_id, r.path, r.user)
        data = self._files(r.sandbox_id).read(path)
        if len(data) > MAX_UNARY_FILE:
            raise invalid("file is larger than 64 MiB: use ReadFileStream")
        return pb.ReadFileResponse(data=data)

    @streaming
    async def ReadFileStream(self, r: pb.FileRef, context: Ctx) -> AsyncIterator[pb.FileChunk]:
        path, _user = self._path(r.sandbox_id, r.path, r.user)
        data = self._files(r.sandbox_id).read(path)
        for start in range(0, len(data), CHUNK):
            yield pb.FileChunk(data=data[start : start + CHUNK])

    @unary
    async def WriteFile(self, r: pb.WriteFileRequest, context: Ctx) -> pb.FileEntry:
        files = self._files(r.sandbox_id)
        path, user = self._path(r.sandbox_id, r.path, r.user)
        return files.write(path, r.data, user, r.mode)

    async def WriteFileStream(
        self, requests: AsyncIterator[pb.WriteFileStreamRequest], context: Ctx
    ) -> pb.FileEntry:
        # The request is a stream: admitted (and its header checked) here, not by `unary`.
        try:
            first = await anext(aiter(requests))
            await admit(self, "WriteFileStream", first.header, context)
            if not first.HasField("header"):
                raise invalid("the first message must be the header")
            h = first.header
            files = self._files(h.sandbox_id)
            path, user = self._path(h.sandbox_id, h.path, h.user)
            data = bytearray()
            async for msg in requests:
                if msg.WhichOneof("part") == "end":
                    return files.write(path, bytes(data), user, h.mode)
                data += msg.chunk
            raise invalid("the upload stopped before its end: nothing was written")
        except Refused as e:
            await context.abort(e.code, e.message)

    @unary
    async def ListDir(self, r: pb.ListDirRequest, context: Ctx) -> pb.ListDirResponse:
        limit = min(r.limit or LIST_LIMIT, LIST_LIMIT)
        path, _user = self._path(r.sandbox_id, r.path, r.user)
        return self._files(r.sandbox_id).list(path, r.depth or 1, limit, r.after)

    @unary
    async def Stat(self, r: pb.FileRef, context: Ctx) -> pb.FileEntry:
        path, _user = self._path(r.sandbox_id, r.path, r.user)
        return self._files(r.sandbox_id).entry(path)

    @unary
    async def MakeDir(self, r: pb.FileRef, context: Ctx) -> pb.FileEntry:
        files = self._files(r.sandbox_id)
        path, user = self._path(r.sandbox_id, r.path, r.user)
        return files.make_dirs(path, user)

    @unary
    async def Move(self, r: pb.MoveRequest, context: Ctx) -> pb.FileEntry:
        files = self._files(r.sandbox_id)
        source, user = self._path(r.sandbox_id, r.source, r.user)
        destination, _user = self._path(r.sandbox_id, r.destination, r.user)
        return files.move(source, destination, user)

    @unary
    async def Remove(self, r: pb.FileRef, context: Ctx) -> pb.Empty:
        path, _user = self._path(r.sandbox_id, r.path, r.user)
        self._files(r.sandbox_id).remove(path)
        return pb.Empty()

    @streaming
    async def WatchDir(self, r: pb.WatchDirRequest, context: Ctx) -> AsyncIterator[pb.FsEvent]:
        files = self._files(r.sandbox_id)
        path, user = self._path(r.sandbox_id, r.path, r.user)
        files.check_listable(path, user)
        watch = files.watches.add(path, r.recursive)
        try:
            yield pb.FsEvent(type=pb.FS_EVENT_TYPE_STARTED)
            while (event := await watch.queue.get()) is not None:
                yield event
        finally:
            files.watches.remove(watch)

    # -- templates -------------------------------------------------------------------------

    def _new_template(self, name: str, overwrite: bool, template: FakeTemplate) -> pb.Template:
        if name in self.templates and not overwrite:
            raise exists(f"template {name!r} already exists")
        self.templates[name] = template
        return template.message()

    @unary
    async def CreateSnapshot(self, r: pb.CreateSnapshotRequest, context: Ctx) -> pb.Template:
        sandbox = self.get(r.sandbox_id)
        if sandbox.status == RUNNING:
            sandbox.status = PAUSED
        elif sandbox.status != PAUSED:
            raise wrong_state(f"sandbox {sandbox.sandbox_id} is {sandbox.status}")
        snapshot = FakeTemplate(
            name=r.name,
            type=SNAPSHOT,
            files=sandbox.files.copy(),
            users=set(sandbox.users),
            base=sandbox.base_image,
            default_user=sandbox.default_user,
            vcpus=sandbox.vcpus,
            memory_mb=sandbox.memory_mb,
            disk_size_mb=sandbox.disk_size_mb,
        )
        return self._new_template(r.name, r.overwrite, snapshot)

    @unary
    async def FlattenRootfs(self, r: pb.FlattenRootfsRequest, context: Ctx) -> pb.Template:
        sandbox = self.running(r.sandbox_id)
        base = self.templates.get(sandbox.base_image)
        image = FakeTemplate(r.name, IMAGE, sandbox.files.copy(), set(sandbox.users))
        image.default_user = base.default_user if base else ""  # kept, as the agent does
        return self._new_template(r.name, r.overwrite, image)

    @unary
    async def DeleteSnapshot(self, r: pb.DeleteSnapshotRequest, context: Ctx) -> pb.Empty:
        template = self.template(r.name)
        users = [s for s in self.sandboxes.values() if s.base_image == r.name]
        dependents = (
            [t for t in self.templates.values() if t.type == SNAPSHOT and t.base == r.name]
            if template.type != SNAPSHOT
            else []
        )
        if users or dependents:
            raise wrong_state(
                f"template {r.name!r} is in use by {len(users)} capsule(s) and "
                f"{len(dependents)} snapshot template(s)"
            )
        del self.templates[r.name]
        return pb.Empty()

    @unary
    async def ListTemplates(self, r: pb.Empty, context: Ctx) -> pb.ListTemplatesResponse:
        return pb.ListTemplatesResponse(templates=[t.message() for t in self.templates.values()])

    # -- ports -----------------------------------------------------------------------------

    @streaming
    async def Tunnel(
        self, requests: AsyncIterator[pb.TunnelFrame], context: Ctx
    ) -> AsyncIterator[pb.TunnelFrame]:
        it = requests.__aiter__()
        first = await anext(it, None)
        if first is None or first.WhichOneof("frame") != "open":
            raise invalid("the first frame must be open")
        sandbox = self.running(check_sandbox_id(first.open.sandbox_id))
        reader, writer = await open_port(sandbox, first.open.port)
        yield pb.TunnelFrame(opened=True)
        async for frame in relay(it, reader, writer, sandbox):
            yield frame

    @unary
    async def ListPorts(self, r: pb.SandboxRef, context: Ctx) -> pb.ListPortsResponse:
        # Looking is no activity, as on the real agent.
        sandbox = self.running(r.sandbox_id, activity=False)
        return pb.ListPortsResponse(ports=sandbox.listening_ports())
