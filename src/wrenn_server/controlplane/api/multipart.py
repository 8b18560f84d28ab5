"""Uploads as the contract sends them (multipart/form-data with a `path` field and a `file`
field), parsed as the body streams in, so the control plane never holds a file.

`path` must come before `file`: the file's bytes go on to the host agent as they arrive, and
there is nowhere to keep them while waiting for a path. Every mistake in the body is a
`BadRequest`: before the file starts, from `path()`; inside or after it, from `file_chunks()`,
whose caller must then abandon the write (the agent keeps nothing of a cancelled one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from ..errors import BadRequest

MAX_PATH_BYTES = 4096
MAX_HEADER_BYTES = 8192  # a part's Content-Disposition; nothing else of its headers is kept


class StreamedMultipart:
    """A multipart/form-data body parsed as it streams in: the parser, its pump and the part
    headers (only Content-Disposition is kept). Subclasses say what a part's begin, data and end
    mean through `_begin`, `_headers_done`, `_part_data` and `_part_end`."""

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes) -> None:
        self._body = body
        self._parser = MultipartParser(boundary, cast(Any, self._callbacks()))
        self._disposition = b""
        self._header_name = b""
        self._complete = False  # the closing boundary was seen
        self._drained = False

    async def _pump(self) -> bool:
        """Parse the next piece of the body; False once it is all parsed."""
        if self._drained:
            return False
        try:
            data = await anext(self._body)
        except StopAsyncIteration:
            self._drained = True
            self._parser.finalize()
            return False
        try:
            self._parser.write(data)
        except MultipartParseError:
            raise BadRequest("malformed multipart body") from None
        return True

    def _disposition_params(self) -> dict[bytes, bytes]:
        return parse_options_header(self._disposition)[1]

    # -- parser callbacks ------------------------------------------------------------------

    def _callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._disposition, self._header_name = b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        # A name cut across two reads of the body arrives in pieces.
        self._header_name += data[start:end].lower()
        if len(self._header_name) > MAX_HEADER_BYTES:
            raise BadRequest(f"a part header is longer than {MAX_HEADER_BYTES} bytes")

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        if self._header_name == b"content-disposition":
            self._disposition += data[start:end]
            if len(self._disposition) > MAX_HEADER_BYTES:
                raise BadRequest(f"a part header is longer than {MAX_HEADER_BYTES} bytes")

    def _header_end(self) -> None:
        self._header_name = b""

    def _headers_done(self) -> None:
        raise NotImplementedError

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        raise NotImplementedError

    def _part_end(self) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        self._complete = True


class MultipartUpload(StreamedMultipart):
    def __init__(self, request: Request) -> None:
        content_type, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise BadRequest("expected a multipart/form-data body with 'path' and 'file'")
        super().__init__(request.stream().__aiter__(), boundary)
        self._part: str | None = None  # name of the part being parsed
        self._path_bytes = bytearray()
        self._path: str | None = None
        self._file = "before"  # before | inside | done
        self._data: list[bytes] = []  # file bytes parsed and not handed on yet
        self.error: Exception | None = None

    async def path(self) -> str:
        """Parse the body up to the start of the file; the path it names."""
        while self._file == "before":
            if not await self._pump():
                missing = "path" if self._path is None else "file"
                raise BadRequest(f"missing the '{missing}' field")
        assert self._path is not None
        return self._path

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive, then the rest of the body, checked. Raises (and
        keeps in `error`) if the body turns out to be wrong or the client goes away."""
        try:
            while self._data or await self._pump():
                data, self._data = self._data, []
                for piece in data:
                    yield piece
            if self._file != "done" or not self._complete:
                raise BadRequest("the multipart body ended before its closing boundary")
        except Exception as e:
            self.error = e
            raise

    # -- parser callbacks ------------------------------------------------------------------

    def _begin(self) -> None:
        super()._begin()
        self._part = None

    def _headers_done(self) -> None:
        self._part = self._disposition_params().get(b"name", b"").decode("latin-1")
        if self._part == "path" and self._path is not None:
            raise BadRequest("more than one 'path' field")
        if self._part == "file":
            if self._file != "before":
                raise BadRequest("more than one 'file' field")
            if self._path is None:
                raise BadRequest("the 'path' field must come before 'file'")
            self._file = "inside"

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "path":
            self._path_bytes += data[start:end]
            if len(self._path_bytes) > MAX_PATH_BYTES:
                raise BadRequest(f"path: longer than {MAX_PATH_BYTES} bytes")
        elif self._part == "file":
            self._data.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._part == "path":
            try:
                self._path = self._path_bytes.decode()
            except UnicodeDecodeError:
                raise BadRequest("path: not valid UTF-8") from None
            if not self._path:
                raise BadRequest("path: must not be empty")
        elif self._part == "file":
            self._file = "done"
