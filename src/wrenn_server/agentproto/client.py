"""Async client of a host agent, for the control plane, tests and benchmarks: one typed method
per RPC of the HostAgent service (proto/hostagent/v1/hostagent.proto), so every answer has its
message type. Unary calls time out after `timeout` seconds (120 unless given); streamed calls
run until they end or are cancelled, and hand back the typed gRPC call (iterate it, `read()`
it, `cancel()` it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from ..proto.hostagent.v1 import hostagent_pb2 as pb
from ..proto.hostagent.v1 import hostagent_pb2_grpc as pb_grpc
from .channel import CLIENT_OPTIONS
from .tls import SERVER_NAME

DEFAULT_TIMEOUT = 120.0

_Req = TypeVar("_Req", bound=Message)
_Res = TypeVar("_Res", bound=Message)

ProcessCall = grpc.aio.UnaryStreamCall[pb.ExecRequest, pb.ProcessEvent]
ConnectCall = grpc.aio.UnaryStreamCall[pb.ProcessRef, pb.ProcessEvent]
FileChunks = grpc.aio.UnaryStreamCall[pb.FileRef, pb.FileChunk]
TunnelCall = grpc.aio.StreamStreamCall[pb.TunnelFrame, pb.TunnelFrame]
WatchCall = grpc.aio.UnaryStreamCall[pb.WatchDirRequest, pb.FsEvent]


class AgentClient:
    def __init__(self, target: str, secret: str, *, certificate: bytes | None = None) -> None:
        """`certificate`: the agent's own (pinned) certificate, the only one trusted; without
        it the channel is plaintext (a unix socket, or an agent on this machine)."""
        if certificate is None:
            self.channel = grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS)
        else:
            self.channel = grpc.aio.secure_channel(
                target,
                grpc.ssl_channel_credentials(root_certificates=certificate),
                options=(*CLIENT_OPTIONS, ("grpc.ssl_target_name_override", SERVER_NAME)),
            )
        self.stub = pb_grpc.HostAgentStub(self.channel)
        self.metadata = (("authorization", f"Bearer {secret}"),)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[_Req, _Res],
        request: _Req,
        timeout: float | None,
    ) -> _Res:
        return await rpc(request, metadata=self.metadata, timeout=timeout)

    # Lifecycle.

    async def create_sandbox(
        self, request: pb.CreateSandboxRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Sandbox:
        return await self._unary(self.stub.CreateSandbox, request, timeout)

    async def get_sandbox(
        self, request: pb.SandboxRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Sandbox:
        return await self._unary(self.stub.GetSandbox, request, timeout)

    async def list_sandboxes(
        self, request: pb.ListSandboxesRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.ListSandboxesResponse:
        return await self._unary(self.stub.ListSandboxes, request, timeout)

    async def destroy_sandbox(
        self, request: pb.SandboxRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Empty:
        return await self._unary(self.stub.DestroySandbox, request, timeout)

    async def ping_sandbox(
        self, request: pb.SandboxRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Empty:
        return await self._unary(self.stub.PingSandbox, request, timeout)

    async def pause_sandbox(
        self, request: pb.SandboxRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Sandbox:
        return await self._unary(self.stub.PauseSandbox, request, timeout)

    async def resume_sandbox(
        self, request: pb.ResumeSandboxRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Sandbox:
        return await self._unary(self.stub.ResumeSandbox, request, timeout)

    async def pause_all(
        self, request: pb.Empty, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.PauseAllResponse:
        return await self._unary(self.stub.PauseAll, request, timeout)

    async def get_sandbox_metrics(
        self, request: pb.SandboxRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.SandboxMetrics:
        return await self._unary(self.stub.GetSandboxMetrics, request, timeout)

    # Processes.

    async def exec(
        self, request: pb.ExecRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.ExecResponse:
        return await self._unary(self.stub.Exec, request, timeout)

    def exec_stream(self, request: pb.ExecRequest, *, timeout: float | None = None) -> ProcessCall:
        return self.stub.ExecStream(request, metadata=self.metadata, timeout=timeout)

    def connect_process(
        self, request: pb.ProcessRef, *, timeout: float | None = None
    ) -> ConnectCall:
        return self.stub.ConnectProcess(request, metadata=self.metadata, timeout=timeout)

    async def list_processes(
        self, request: pb.SandboxRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.ListProcessesResponse:
        return await self._unary(self.stub.ListProcesses, request, timeout)

    async def send_stdin(
        self, request: pb.SendStdinRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Empty:
        return await self._unary(self.stub.SendStdin, request, timeout)

    async def close_stdin(
        self, request: pb.ProcessRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Empty:
        return await self._unary(self.stub.CloseStdin, request, timeout)

    async def signal_process(
        self, request: pb.SignalProcessRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Empty:
        return await self._unary(self.stub.SignalProcess, request, timeout)

    async def resize_pty(
        self, request: pb.ResizePtyRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Empty:
        return await self._unary(self.stub.ResizePty, request, timeout)

    # Files.

    async def read_file(
        self, request: pb.FileRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.ReadFileResponse:
        return await self._unary(self.stub.ReadFile, request, timeout)

    async def write_file(
        self, request: pb.WriteFileRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.FileEntry:
        return await self._unary(self.stub.WriteFile, request, timeout)

    def read_file_stream(self, request: pb.FileRef, *, timeout: float | None = None) -> FileChunks:
        return self.stub.ReadFileStream(request, metadata=self.metadata, timeout=timeout)

    async def write_file_stream(
        self,
        header: pb.WriteFileStreamRequest.Header,
        chunks: AsyncIterator[bytes],
        *,
        timeout: float | None = None,
    ) -> pb.FileEntry:
        """Sends the header, the chunks, then `end`: a stream that fails before its end (the
        chunks raise) writes nothing."""

        async def requests() -> AsyncIterator[pb.WriteFileStreamRequest]:
            yield pb.WriteFileStreamRequest(header=header)
            async for chunk in chunks:
                yield pb.WriteFileStreamRequest(chunk=chunk)
            yield pb.WriteFileStreamRequest(end=True)

        return await self.stub.WriteFileStream(requests(), metadata=self.metadata, timeout=timeout)

    async def list_dir(
        self, request: pb.ListDirRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.ListDirResponse:
        return await self._unary(self.stub.ListDir, request, timeout)

    async def stat(
        self, request: pb.FileRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.FileEntry:
        return await self._unary(self.stub.Stat, request, timeout)

    async def make_dir(
        self, request: pb.FileRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.FileEntry:
        return await self._unary(self.stub.MakeDir, request, timeout)

    async def move(
        self, request: pb.MoveRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.FileEntry:
        return await self._unary(self.stub.Move, request, timeout)

    async def remove(
        self, request: pb.FileRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Empty:
        return await self._unary(self.stub.Remove, request, timeout)

    def watch_dir(self, request: pb.WatchDirRequest, *, timeout: float | None = None) -> WatchCall:
        """A directory's events: FS_EVENT_TYPE_STARTED once the watch is in place, then one
        FsEvent per change, until the directory goes (the stream ends) or `cancel()`."""
        return self.stub.WatchDir(request, metadata=self.metadata, timeout=timeout)

    # Templates.

    async def create_snapshot(
        self, request: pb.CreateSnapshotRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Template:
        return await self._unary(self.stub.CreateSnapshot, request, timeout)

    async def flatten_rootfs(
        self, request: pb.FlattenRootfsRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Template:
        return await self._unary(self.stub.FlattenRootfs, request, timeout)

    async def delete_snapshot(
        self, request: pb.DeleteSnapshotRequest, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.Empty:
        return await self._unary(self.stub.DeleteSnapshot, request, timeout)

    async def list_templates(
        self, request: pb.Empty, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.ListTemplatesResponse:
        return await self._unary(self.stub.ListTemplates, request, timeout)

    # -- ports -----------------------------------------------------------------------------

    def tunnel(self, *, timeout: float | None = None) -> TunnelCall:
        """A bidirectional stream: `write()` the `open` frame, `read()` the agent's `opened`,
        then data and `close` frames both ways (`done_writing()` also half-closes)."""
        return self.stub.Tunnel(metadata=self.metadata, timeout=timeout)

    async def list_ports(
        self, request: pb.SandboxRef, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> pb.ListPortsResponse:
        return await self._unary(self.stub.ListPorts, request, timeout)
