"""Tunnels of the fake agent: a capsule's port is a local TCP server the test names
(`FakeSandbox.ports`), spliced to the caller's frames as the real agent does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .errors import Refused, invalid
from .sandbox import FakeSandbox


async def open_port(
    sandbox: FakeSandbox, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if not 1 <= port <= 65535:
        raise invalid("port must be an integer from 1 to 65535")
    address = sandbox.ports.get(port)
    try:
        if address is None:
            raise ConnectionRefusedError()
        return await asyncio.open_connection(*address)
    except OSError:
        raise Refused(
            grpc.StatusCode.UNAVAILABLE, f"nothing is listening on port {port} in the capsule"
        ) from None


async def relay(
    frames: AsyncIterator[pb.TunnelFrame],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    sandbox: FakeSandbox,
) -> AsyncIterator[pb.TunnelFrame]:
    async def inbound() -> None:
        async for frame in frames:
            if frame.WhichOneof("frame") == "data":
                writer.write(frame.data)
                await writer.drain()
                sandbox.touch()
            elif frame.WhichOneof("frame") == "close":
                break
        writer.write_eof()

    task = asyncio.create_task(inbound())
    try:
        while data := await reader.read(64 * 1024):
            sandbox.touch()
            yield pb.TunnelFrame(data=data)
        yield pb.TunnelFrame(close=True)
        await task
    except (ConnectionError, OSError):  # as the real agent answers a reset
        raise Refused(
            grpc.StatusCode.UNAVAILABLE, "the connection to the capsule's port was reset"
        ) from None
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        writer.close()
