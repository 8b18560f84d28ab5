"""HTTP request bodies: read in bounded pieces from Content-Length or chunked transfer coding.

The host streams uploads with `Transfer-Encoding: chunked`, so a body is never read whole unless
it is a small JSON document.
"""

from __future__ import annotations

from .errors import ApiError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from io import BufferedIOBase
    from typing import Iterator

    from .http1 import Headers

CHUNK = 64 * 1024
MAX_JSON = 1024 * 1024


class ClientGone(Exception):
    """The client went away (mid-body or mid-response): drop the connection quietly."""


class BodyReader:
    """The body of one request.

    A malformed body (bad Content-Length, bad chunk framing) sets `broken`: reads then raise
    ApiError(400) and the connection is not reused.
    """

    def __init__(self, rfile: BufferedIOBase, headers: Headers) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self._left = 0  # bytes left in the body (Content-Length) or in the current chunk
        self.done = False
        self.broken = False
        if self._chunked:
            return
        length = headers.get("Content-Length")
        if length is not None and not length.strip().isdigit():
            self.broken = True  # the server answers 400 and drops the connection
            return
        self._left = int(length or 0)
        self.done = self._left == 0

    def _readline(self) -> bytes:
        try:
            line = self._rfile.readline(1024)
        except OSError:
            raise ClientGone() from None
        if not line.endswith(b"\n"):
            self.broken = True
            if not line:
                raise ClientGone()
            raise ApiError(400, "malformed chunked body")
        return line

    def _next_chunk(self) -> bool:
        """Start the next chunk of a chunked body; False at the last (empty) chunk."""
        size_field = self._readline().split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            self.broken = True
            raise ApiError(400, "malformed chunked body") from None
        if size == 0:
            while self._readline() not in (b"\r\n", b"\n"):  # trailers
                pass
            self.done = True
            return False
        self._left = size
        return True

    def read(self, size: int = CHUNK) -> bytes:
        """Up to `size` bytes of the body; b"" at its end."""
        if self.broken:
            raise ApiError(400, "malformed request body")
        if self.done:
            return b""
        if self._chunked and self._left == 0 and not self._next_chunk():
            return b""
        try:
            data = self._rfile.read(min(size, self._left))
        except OSError:
            raise ClientGone() from None
        if not data:
            self.broken = True
            raise ClientGone()
        self._left -= len(data)
        if self._left == 0:
            if not self._chunked:
                self.done = True
            elif self._readline() not in (b"\r\n", b"\n"):
                self.broken = True
                raise ApiError(400, "malformed chunked body")
        return data

    def chunks(self) -> Iterator[bytes]:
        while True:
            data = self.read()
            if not data:
                return
            yield data

    def read_all(self, limit: int = MAX_JSON) -> bytes:
        parts = []
        total = 0
        for data in self.chunks():
            total += len(data)
            if total > limit:
                self.broken = True
                raise ApiError(400, "request body too large (limit %d bytes)" % limit)
            parts.append(data)
        return b"".join(parts)

    def drain(self, limit: int = CHUNK) -> bool:
        """Discard up to `limit` unread bytes; True if the body is now fully consumed."""
        if self.broken:
            return False
        total = 0
        try:
            while not self.done and total <= limit:
                total += len(self.read())
        except (ApiError, ClientGone):
            return False
        return self.done
