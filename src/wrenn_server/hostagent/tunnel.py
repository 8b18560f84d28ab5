"""A tunnel's bytes between the caller's gRPC frames and the connection envd opened to a port of
the capsule (see envd/tunnel.py), with half-close passed on both ways."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from ..proto.hostagent.v1 import hostagent_pb2 as pb
from . import errors

# Bigger pieces mean fewer gRPC messages per byte: at 64 KiB a proxied download spent
# ~40% more CPU in the control plane (bench/proxy_bench.py).
CHUNK = 256 * 1024


async def _inbound(
    frames: AsyncIterator[pb.TunnelFrame], writer: asyncio.StreamWriter, touch: Callable[[], None]
) -> None:
    """The caller's bytes to the service; its `close` (or the end of its stream) half-closes."""
    async for frame in frames:
        kind = frame.WhichOneof("frame")
        if kind == "data":
            writer.write(frame.data)
            await writer.drain()
            touch()
        elif kind == "close":
            break
        else:
            raise errors.InvalidArgument("only data and close frames may follow open")
    if writer.can_write_eof():
        writer.write_eof()


async def relay(
    frames: AsyncIterator[pb.TunnelFrame],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    touch: Callable[[], None],
) -> AsyncIterator[pb.TunnelFrame]:
    """The service's bytes as frames, then `close`; ends once the caller is done too. Traffic
    either way counts as the capsule's activity (`touch`)."""
    inbound = asyncio.create_task(_inbound(frames, writer, touch))
    try:
        while data := await reader.read(CHUNK):
            touch()
            yield pb.TunnelFrame(data=data)
            if inbound.done() and inbound.exception() is not None:
                break
        yield pb.TunnelFrame(close=True)
        await inbound
    except (ConnectionError, OSError) as e:
        raise errors.Unavailable("the connection to the capsule's port was reset") from e
    finally:
        inbound.cancel()
        with contextlib.suppress(BaseException):
            await inbound
        writer.close()
