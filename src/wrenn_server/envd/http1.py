"""HTTP/1.1 requests read off a connection: the request line, the headers, keep-alive.

envd writes its responses itself (server.Handler); what it needs of the standard library's
http.server is only this part, and importing http.server costs a capsule's start ~50 ms inside
gVisor (it pulls in http.client, ssl, email, html, mimetypes and, through shutil, bz2 and lzma:
each module a file read through the sandbox). The rules are http.server's: HTTP/1.1 keeps the
connection unless `Connection: close`, HTTP/1.0 closes it unless `Connection: keep-alive`,
`Expect: 100-continue` is answered before the body is read, malformed requests get an error and
a closed connection.
"""

from __future__ import annotations

import socket
import socketserver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

MAX_LINE = 65536
MAX_HEADERS = 100

# The reason phrases of what envd answers (http.HTTPStatus would cost an enum's creation).
PHRASES = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    416: "Requested Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
    507: "Insufficient Storage",
}
_HEX = frozenset("0123456789abcdefABCDEF")


def phrase(status: int) -> str:
    return PHRASES.get(status, "")


def split_target(target: str) -> Tuple[str, Dict[str, str]]:
    """A request target's path (as sent) and its query's parameters, percent-decoded with `+`
    as a space, the last value of a repeated one: what urllib.parse's urlsplit and parse_qs
    (keep_blank_values) give, without importing urllib.parse (and ipaddress with it)."""
    path, _, query = target.partition("#")[0].partition("?")
    params: Dict[str, str] = {}
    for field in query.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        params[unquote(name.replace("+", " "))] = unquote(value.replace("+", " "))
    return path, params


def unquote(text: str) -> str:
    """%XX sequences decoded as UTF-8 (invalid bytes replaced), anything else kept."""
    if "%" not in text:
        return text
    first, *rest = text.split("%")
    out = bytearray(first.encode("utf-8"))
    for piece in rest:
        if len(piece) >= 2 and piece[0] in _HEX and piece[1] in _HEX:
            out.append(int(piece[:2], 16))
            out += piece[2:].encode("utf-8")
        else:
            out += b"%" + piece.encode("utf-8")
    return out.decode("utf-8", "replace")


class Headers:
    """A request's headers by case-insensitive name; a repeated header keeps its first value
    (as http.server's `Message.get` did)."""

    __slots__ = ("_values",)

    def __init__(self, values: Dict[str, str]) -> None:
        self._values = values

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self._values.get(name.lower(), default)


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestHandler(socketserver.StreamRequestHandler):
    """One connection: requests one after another while the connection is kept. A subclass
    answers each in `handle_request` and rejects a malformed one in `send_error`."""

    command = ""
    path = ""
    request_version = ""
    headers = Headers({})
    close_connection = True

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                self.close_connection = True
                return
            try:
                self._parse(line)
            except BadRequest as e:
                self.send_error(e.status, e.message)
                return
            self.handle_request()
            self.wfile.flush()
        except socket.timeout as e:  # TimeoutError from Python 3.10 on
            self.log_error("Request timed out: %r", e)
            self.close_connection = True

    def _parse(self, line: bytes) -> None:
        self.close_connection = True
        self.command = self.path = self.request_version = ""
        if len(line) > MAX_LINE:
            raise BadRequest(414, "request line too long")
        words = line.decode("iso-8859-1").rstrip("\r\n").split()
        if len(words) != 3:
            raise BadRequest(400, "bad request line")
        command, path, version = words
        if not version.startswith("HTTP/"):
            raise BadRequest(400, "bad request version")
        try:
            major, minor = (int(part) for part in version[5:].split(".", 1))
        except ValueError:
            raise BadRequest(400, "bad request version") from None
        if major >= 2:
            raise BadRequest(505, "HTTP version not supported")
        self.command, self.request_version = command, version
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        self.headers = self._read_headers()
        keep = (major, minor) >= (1, 1)
        connection = (self.headers.get("Connection") or "").lower()
        if "close" in connection:
            keep = False
        elif "keep-alive" in connection:
            keep = True
        self.close_connection = not keep
        expect = (self.headers.get("Expect") or "").lower()
        if expect == "100-continue" and (major, minor) >= (1, 1):
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _read_headers(self) -> Headers:
        values: Dict[str, str] = {}
        last = ""
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if len(raw) > MAX_LINE:
                raise BadRequest(431, "header line too long")
            if raw in (b"\r\n", b"\n", b""):
                return Headers(values)
            text = raw.decode("iso-8859-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and last:  # an obsolete folded continuation line
                values[last] += " " + text.strip()
                continue
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                raise BadRequest(400, "malformed header line")
            last = name.lower()
            values.setdefault(last, value.strip())
        raise BadRequest(431, "too many headers")

    def handle_request(self) -> None:
        raise NotImplementedError

    def send_error(self, code: int, message: Optional[str] = None) -> None:
        raise NotImplementedError

    def log_error(self, format: str, *args: object) -> None:
        pass
