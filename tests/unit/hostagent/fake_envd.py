"""A stand-in envd for tests without capsules: a real HTTP server on 127.0.0.1 answering each
path with a canned response, recording the requests it gets."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: bytes | list[bytes] = b""  # a list is sent piece by piece, flushed between
    content_type: str = "application/json"
    hang: bool = False  # never answer (until the test ends)


@dataclass
class FakeEnvd:
    """Answers each path with its canned Answer (404 for others) and records the requests."""

    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, auth
    bodies: list[bytes] = field(default_factory=list)  # request bodies, in order
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0


def _handler(envd: FakeEnvd) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection does

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            envd.bodies.append(self.rfile.read(length) if length else b"")
            path = self.path.split("?", 1)[0]
            envd.seen.append((self.command, path, self.headers.get("authorization", "")))
            answer = envd.answers.get(path, Answer(404, b'{"error": {"code": "not_found"}}'))
            if answer.hang:
                envd.release.wait(30)
                return
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.end_headers()
            pieces = answer.body if isinstance(answer.body, list) else [answer.body]
            for piece in pieces:
                self.wfile.write(piece)
                self.wfile.flush()

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serving_envd() -> Iterator[FakeEnvd]:
    """A FakeEnvd served until the block ends (a hung answer is released then)."""
    fake = FakeEnvd()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()
