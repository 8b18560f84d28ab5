"""HTTP server: connection handling, bearer-token auth, routing, error and response writing.

Endpoints live in `routes`; this module only knows how to read requests and write responses.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import socket
import socketserver
import sys
import threading

# hmac.compare_digest is this very function (constant time); importing hmac would also load
# OpenSSL, several MB of memory in every capsule.
from _operator import _compare_digest as compare_digest

from . import routes, threads, users
from .errors import ApiError, error_body
from .http1 import RequestHandler, phrase, split_target
from .httpio import MAX_JSON, BodyReader, ClientGone

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple, Union

    from .peers import AnyPeer, GatewayOnly
    from .processes import ProcessTable

_GONE = (ClientGone, ConnectionError, socket.timeout)
_REFUSED_BODY = json.dumps(
    error_body(403, "envd answers the host agent only"), separators=(",", ":")
).encode()
_REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
_REFUSED += b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
    len(_REFUSED_BODY),
    _REFUSED_BODY,
)


class State:
    """Settings changed by /init: access token, default user and extra environment."""

    def __init__(self, token: bytes) -> None:
        self.lock = threading.Lock()
        self.token = token
        self.default_user = "root"
        self.env: Dict[str, str] = {}

    def user(self, name: Optional[str]) -> users.User:
        return users.lookup(name or self.default_user)


class EnvdServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: Tuple[str, int],
        state: State,
        table: ProcessTable,
        peers: Union[GatewayOnly, AnyPeer],
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self.table = table
        self.peers = peers
        super().__init__(address, Handler)
        self.server_port = int(self.server_address[1])

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        """A thread per connection, as ThreadingMixIn's, without its start-up handshake (see
        threads.py): nobody joins them (daemon_threads, no block_on_close)."""
        threads.start(self.process_request_thread, request, client_address)

    def serve_until_signalled(self, idle_wake: float) -> None:
        """Accept connections until a signal handler raises (the main thread only). socketserver's
        loop would see a signal only if it reached this thread: the kernel gives it to any
        thread, Python runs its handler here, and this thread sleeps in select until a
        connection comes or `idle_wake` passes (long: an idle capsule should not wake). A
        signal's wake-up byte on a pipe of its own ends that sleep."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous = signal.set_wakeup_fd(wake_w)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(wake_r, selectors.EVENT_READ)
                while True:
                    for key, _ in selector.select(idle_wake):
                        if key.fileobj is self:
                            self._handle_request_noblock()  # type: ignore[attr-defined]
                        else:
                            os.read(wake_r, 512)  # its handler runs once select returned
        finally:
            signal.set_wakeup_fd(previous)
            os.close(wake_r)
            os.close(wake_w)

    def verify_request(self, request: object, client_address: object) -> bool:
        """Runs in the accepting thread, before a handler thread exists for the connection."""
        host = client_address[0] if isinstance(client_address, tuple) else ""
        if self.peers.allows(str(host)):
            return True
        if isinstance(request, socket.socket):
            # Best effort, never blocking the accept loop: the connection is closed either way.
            try:
                request.send(_REFUSED, socket.MSG_DONTWAIT)
            except OSError:
                pass
        return False

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], _GONE):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class Handler(RequestHandler):
    disable_nagle_algorithm = True
    timeout = 600  # idle keep-alive connections and stalled clients give their thread back

    body: BodyReader
    query: Dict[str, str]
    pid: int

    @property
    def envd(self) -> EnvdServer:
        server = self.server
        assert isinstance(server, EnvdServer)
        return server

    def handle_request(self) -> None:
        self._sent = False
        self.body = BodyReader(self.rfile, self.headers)
        try:
            self._dispatch()
        except ApiError as exc:
            self._fail(exc.status, exc.body())
        except _GONE:
            self.close_connection = True
        except Exception:
            import traceback  # only on the rare error path: keeps startup memory down

            sys.stderr.write("envd: error handling %s %s\n" % (self.command, self.path))
            traceback.print_exc()
            self._fail(500, error_body(500, "internal error"))
        if not self.body.done:
            self.close_connection = True

    def _dispatch(self) -> None:
        header = (self.headers.get("Authorization") or "").encode("latin-1", "replace")
        if not compare_digest(header, b"Bearer " + self.envd.state.token):
            raise ApiError(401, "missing or invalid access token")
        if self.body.broken:
            raise ApiError(400, "invalid Content-Length")
        path, self.query = split_target(self.path)
        route, pid = routes.match(self.command, path)
        self.pid = pid
        route(self)

    # -- request helpers -----------------------------------------------------------------

    def json_body(self) -> Dict[str, object]:
        raw = self.body.read_all(MAX_JSON)
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise ApiError(400, "request body must be a JSON object")
        return value

    def client_gone(self) -> bool:
        """True if the peer closed the connection (checked while a stream is idle)."""
        poller = select.poll()
        poller.register(self.connection, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            events = poller.poll(0)
            if not events:
                return False
            if events[0][1] & (select.POLLHUP | select.POLLERR):
                return True
            data: bytes = self.connection.recv(1, socket.MSG_PEEK)
            return data == b""
        except OSError:
            return True

    # -- responses -----------------------------------------------------------------------

    def _head(self, status: int, headers: List[Tuple[str, str]]) -> bytes:
        if not self.body.done and not self.body.drain():
            self.close_connection = True  # unread body: the connection cannot be reused
        lines = ["HTTP/1.1 %d %s\r\n" % (status, phrase(status))]
        lines.extend("%s: %s\r\n" % pair for pair in headers)
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _send(self, status: int, body: Optional[bytes], ctype: str = "") -> None:
        headers: List[Tuple[str, str]] = []
        if body is not None:
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        self._sent = True
        self._write(self._head(status, headers) + (body or b""))

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError:
            raise ClientGone() from None

    def _fail(self, status: int, body: object) -> None:
        if self._sent:  # mid-stream: all we can do is drop the connection
            self.close_connection = True
            return
        try:
            self.send_json(status, body)
        except ClientGone:
            self.close_connection = True

    def send_json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    def send_empty(self) -> None:
        self._send(204, None)

    def send_head(self, status: int, headers: List[Tuple[str, str]], body: bytes = b"") -> None:
        """Headers (plus the first body bytes, in the same write) of a streamed response."""
        self._sent = True
        self._write(self._head(status, headers) + body)

    def start_chunked(self, ctype: str, first: bytes = b"") -> None:
        """Headers of a chunked response, with its `first` chunk in the same write."""
        headers = [("Content-Type", ctype), ("Transfer-Encoding", "chunked")]
        self.send_head(200, [*headers, ("Cache-Control", "no-store")], _chunk(first))

    def write_chunk(self, data: bytes, last: bool = False) -> None:
        """One chunk; with `last`, the end of the response in the same write. Every write is a
        packet the sandbox's network stack sends and the host agent wakes up for."""
        self._write(_chunk(data) + (b"0\r\n\r\n" if last else b""))

    def end_chunked(self) -> None:
        self._write(b"0\r\n\r\n")

    def write_raw(self, data: bytes) -> None:
        self._write(data)

    # -- http1.RequestHandler hooks -------------------------------------------------------

    def send_error(self, code: int, message: Optional[str] = None) -> None:
        """Malformed requests get the JSON error shape too."""
        self.close_connection = True
        text = message or phrase(code) or "error"
        body = json.dumps(error_body(code, text), separators=(",", ":")).encode()
        head = "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        head += "Connection: close\r\n\r\n"
        try:
            self.wfile.write((head % (code, phrase(code), len(body))).encode("latin-1") + body)
        except OSError:
            pass

    def log_error(self, format: str, *args: object) -> None:
        if not format.startswith("Request timed out"):  # an idle keep-alive connection
            sys.stderr.write("envd: %s\n" % (format % args))


def _chunk(data: bytes) -> bytes:
    # An empty chunk would end the response: nothing is written for no data.
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
