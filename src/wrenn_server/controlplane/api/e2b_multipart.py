"""E2B's multipart uploads to envd's `/files`: one or more `file` parts, each named by its
filename (the path it goes to, unless the query's `path` names the only one), parsed as the
body streams in so each file goes on to the host agent as it arrives. Every mistake in the body
is a `BadRequest`, raised from the part's chunks, whose writer then abandons that file (the
agent keeps nothing of a cancelled write)."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

from python_multipart.multipart import parse_options_header

from ..errors import BadRequest
from .multipart import StreamedMultipart

MAX_PARTS = 1000


def boundary_of(content_type: str) -> bytes | None:
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    return boundary if kind == b"multipart/form-data" and boundary else None


class FileParts(StreamedMultipart):
    """`parts()` yields each file part's filename; its bytes come from `chunks()` before the
    next part is asked for."""

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes) -> None:
        super().__init__(body, boundary)
        self._events: deque[tuple[str, bytes]] = deque()  # begin(filename) | data | end
        self._count = 0

    async def parts(self) -> AsyncIterator[tuple[str, str]]:
        """(field name, filename) of each part, in order."""
        while True:
            event = await self._next()
            if event is None:
                if not self._complete:
                    raise BadRequest("the multipart body ended before its closing boundary")
                return
            kind, value = event
            if kind == "begin":
                name, _, filename = value.decode("utf-8", "replace").partition("\0")
                yield name, filename

    async def chunks(self) -> AsyncIterator[bytes]:
        """The current part's bytes as they arrive, up to its end."""
        while True:
            event = await self._next()
            if event is None:
                raise BadRequest("the multipart body ended inside a part")
            kind, value = event
            if kind == "end":
                return
            if kind == "data" and value:
                yield value

    async def _next(self) -> tuple[str, bytes] | None:
        while not self._events:
            if not await self._pump() and not self._events:
                return None
        return self._events.popleft()

    # -- parser callbacks ------------------------------------------------------------------

    def _begin(self) -> None:
        super()._begin()
        self._count += 1
        if self._count > MAX_PARTS:
            raise BadRequest(f"more than {MAX_PARTS} parts")

    def _headers_done(self) -> None:
        params = self._disposition_params()
        name = params.get(b"name", b"")
        filename = params.get(b"filename", b"")
        self._events.append(("begin", name + b"\0" + filename))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", bytes(data[start:end])))

    def _part_end(self) -> None:
        self._events.append(("end", b""))
