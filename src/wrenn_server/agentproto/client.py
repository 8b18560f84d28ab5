"""Async client of a host agent: the stub plus credentials, for the control plane, tests and
benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from ..proto.hostagent.v1 import hostagent_pb2 as pb
from ..proto.hostagent.v1 import hostagent_pb2_grpc as pb_grpc
from .channel import GRPC_OPTIONS
from .tls import SERVER_NAME


class AgentClient:
    def __init__(self, target: str, secret: str, *, certificate: bytes | None = None) -> None:
        """`certificate`: the agent's own (pinned) certificate, the only one trusted; without
        it the channel is plaintext (a unix socket, or an agent on this machine)."""
        if certificate is None:
            self.channel = grpc.aio.insecure_channel(target, options=GRPC_OPTIONS)
        else:
            self.channel = grpc.aio.secure_channel(
                target,
                grpc.ssl_channel_credentials(root_certificates=certificate),
                options=(*GRPC_OPTIONS, ("grpc.ssl_target_name_override", SERVER_NAME)),
            )
        self.stub = pb_grpc.HostAgentStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata = (("authorization", f"Bearer {secret}"),)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: str, request: Any, timeout: float | None = 120) -> Any:
        return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout)

    def stream(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, metadata=self.metadata)

    async def create(self, **kw: Any) -> pb.Sandbox:
        sandbox: pb.Sandbox = await self.call("CreateSandbox", pb.CreateSandboxRequest(**kw))
        return sandbox

    async def destroy(self, sandbox_id: str) -> None:
        await self.call("DestroySandbox", pb.SandboxRef(sandbox_id=sandbox_id))

    async def exec(self, sandbox_id: str, cmd: str, **kw: Any) -> pb.ExecResponse:
        res: pb.ExecResponse = await self.call(
            "Exec", pb.ExecRequest(sandbox_id=sandbox_id, cmd=cmd, **kw)
        )
        return res

    async def write_stream(
        self,
        sandbox_id: str,
        path: str,
        chunks: AsyncIterator[bytes],
        user: str = "",
        mode: int = 0,
    ) -> pb.FileEntry:
        async def requests() -> AsyncIterator[pb.WriteFileStreamRequest]:
            header = pb.WriteFileStreamRequest.Header(
                sandbox_id=sandbox_id, path=path, user=user, mode=mode
            )
            yield pb.WriteFileStreamRequest(header=header)
            async for chunk in chunks:
                yield pb.WriteFileStreamRequest(chunk=chunk)
            yield pb.WriteFileStreamRequest(end=True)

        entry: pb.FileEntry = await self.stub.WriteFileStream(requests(), metadata=self.metadata)
        return entry

    async def read_stream(self, sandbox_id: str, path: str) -> AsyncIterator[bytes]:
        call = self.stream("ReadFileStream", pb.FileRef(sandbox_id=sandbox_id, path=path))
        async for msg in call:
            yield msg.data
