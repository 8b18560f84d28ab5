"""envd's HTTP API for a capsule: `/files` downloads and uploads streamed end to end through
the agent's ReadFileStream / WriteFileStream (the control plane never holds a whole file),
`/envs` (the default user's environment, as envd reports its own)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from ....proto.hostagent.v1 import hostagent_pb2 as pb
from ...agents.rpc import agent_errors
from ...errors import BadRequest, HostAgentError
from .pacing import messages
from .target import Envd

MAX_ENV_BYTES = 1024 * 1024
ENV_TIMEOUT_SEC = 10


def file_ref(envd: Envd, path: str | None, user: str) -> pb.FileRef:
    if not path:
        raise BadRequest("the path query parameter is required")
    return pb.FileRef(sandbox_id=envd.capsule_id, path=path, user=user)


async def read(envd: Envd, ref: pb.FileRef) -> AsyncIterator[bytes]:
    """The file's bytes as the agent sends them. The first chunk is read before this returns,
    so a missing file is still an error the caller can answer before its response starts."""
    call = envd.client.read_file_stream(ref)
    try:
        with agent_errors():
            first = await call.read()
    except BaseException:
        call.cancel()
        raise

    async def chunks() -> AsyncIterator[bytes]:
        try:
            if isinstance(first, pb.FileChunk):
                yield bytes(first.data)
                with agent_errors():
                    async for chunk in messages(call, pb.FileChunk):
                        yield bytes(chunk.data)
        finally:
            call.cancel()

    return chunks()


async def write(envd: Envd, ref: pb.FileRef, chunks: AsyncIterator[bytes]) -> pb.FileEntry:
    """The chunks written to the file; a body that fails halfway writes nothing."""
    header = pb.WriteFileStreamRequest.Header(
        sandbox_id=envd.capsule_id, path=ref.path, user=ref.user
    )
    with agent_errors():
        return await envd.client.write_file_stream(header, chunks)


async def gunzipped(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """A gzip body (`Content-Encoding: gzip`) inflated as it streams, at most `limit` bytes
    (a small body that inflates without bound is refused, not written)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    total = 0
    try:
        async for chunk in chunks:
            data = inflater.decompress(chunk)
            total += len(data)
            if total > limit:
                raise BadRequest(f"the inflated body is larger than {limit} bytes")
            if data:
                yield data
        tail = inflater.flush()
    except zlib.error:
        raise BadRequest("the body is not valid gzip") from None
    if not inflater.eof:
        raise BadRequest("the gzip body ended early")
    if tail:
        yield tail


async def environment(envd: Envd, user: str) -> dict[str, str]:
    """The environment a process of `user` (the capsule's default user: '') starts with."""
    request = pb.ExecRequest(
        sandbox_id=envd.capsule_id,
        argv=["env", "-0"],
        user=user,
        timeout_sec=ENV_TIMEOUT_SEC,
        max_output_bytes=MAX_ENV_BYTES,
    )
    with agent_errors(not_found=BadRequest):
        res = await envd.client.exec(request, timeout=ENV_TIMEOUT_SEC + 5)
    if res.exit_code != 0 or res.timed_out or res.stdout_truncated:
        raise HostAgentError("the environment could not be read")
    pairs = (item.partition("=") for item in res.stdout.decode("utf-8", "replace").split("\0"))
    return {name: value for name, sep, value in pairs if sep and name}
