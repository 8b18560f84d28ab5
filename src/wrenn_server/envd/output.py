"""Per-process output buffer: the last 4 MiB of stdout and of stderr, read through byte cursors.

Each stream is a deque of chunks; every chunk carries a global sequence number so readers can
replay stdout and stderr interleaved in the order they were produced.
"""

from __future__ import annotations

from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Deque, List, Tuple

CAP = 4 * 1024 * 1024
CHUNK = 64 * 1024
# Past this many chunks in one stream, small writes are merged even if that blurs the exact
# stdout/stderr interleaving: it bounds the bookkeeping for programs that write byte by byte.
MAX_CHUNKS = 2048
STREAMS = ("stdout", "stderr")


class _Chunk:
    __slots__ = ("data", "offset", "seq")

    def __init__(self, seq: int, offset: int, data: bytes) -> None:
        self.seq = seq
        self.offset = offset  # stream offset of data[0]
        self.data = bytearray(data)


class _Stream:
    __slots__ = ("chunks", "end", "start")

    def __init__(self) -> None:
        self.chunks: Deque[_Chunk] = deque()
        self.start = 0  # stream offset of the oldest byte still buffered
        self.end = 0  # stream offset just past the newest byte


class OutputLog:
    """Bounded output of one process. Not thread-safe: the owner serialises access."""

    def __init__(self, cap: int = CAP) -> None:
        self._streams = (_Stream(), _Stream())
        self._seq = 0
        self._cap = cap

    @property
    def buffered(self) -> int:
        """Bytes held for both streams."""
        return sum(stream.end - stream.start for stream in self._streams)

    def append(self, index: int, data: bytes) -> None:
        stream = self._streams[index]
        last = stream.chunks[-1] if stream.chunks else None
        if (
            last is not None
            and len(last.data) + len(data) <= CHUNK
            and (last.seq == self._seq or len(stream.chunks) >= MAX_CHUNKS)
        ):
            last.data += data
        else:
            self._seq += 1
            stream.chunks.append(_Chunk(self._seq, stream.end, data))
        stream.end += len(data)
        self._trim(stream)

    def _trim(self, stream: _Stream) -> None:
        excess = stream.end - stream.start - self._cap
        while excess > 0:
            first = stream.chunks[0]
            if len(first.data) <= excess:
                stream.chunks.popleft()
                cut = len(first.data)
            else:
                cut = excess
                del first.data[:cut]
                first.offset += cut
            stream.start += cut
            excess -= cut

    def read(self, cursor: List[int]) -> List[Tuple[int, bytes]]:
        """Return `(stream index, data)` past `cursor` in write order and advance `cursor`.

        `cursor` holds one stream offset per stream; output dropped by the cap is skipped.
        """
        pending: List[Tuple[int, int, bytes]] = []
        for index, stream in enumerate(self._streams):
            pos = max(cursor[index], stream.start)
            # Newest first: a follower usually has only the last chunk or two left to read.
            for chunk in reversed(stream.chunks):
                if chunk.offset + len(chunk.data) <= pos:
                    break
                skip = max(0, pos - chunk.offset)
                pending.append((chunk.seq, index, bytes(chunk.data[skip:])))
            cursor[index] = stream.end
        pending.sort()
        return [(index, data) for _seq, index, data in pending]
