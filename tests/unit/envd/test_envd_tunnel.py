"""envd's tunnel: 101 then raw bytes both ways to a port on loopback, half-close passed on;
a port nobody listens on is a 502 naming it, envd's own port is refused, bad ports are 400s."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Envd


class Echo(socketserver.BaseRequestHandler):
    """Echoes until the client half-closes, then says goodbye and closes."""

    def handle(self) -> None:
        sock = self.request
        while data := sock.recv(65536):
            sock.sendall(data)
        sock.sendall(b"bye")


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def open_tunnel(envd: Envd, port: object) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", envd.port), timeout=10)
    sock.sendall(
        f"GET /tunnel?port={port} HTTP/1.1\r\nHost: envd\r\nAuthorization: Bearer {envd.token}"
        "\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    return sock, head


def error_of(sock: socket.socket, head: bytes) -> tuple[int, dict[str, str]]:
    with sock:
        return _error_of(sock, head)


def _error_of(sock: socket.socket, head: bytes) -> tuple[int, dict[str, str]]:
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return int(head.split(b" ")[1]), json.loads(body)["error"]


def test_bytes_flow_both_ways_with_half_close(envd: Envd, echo: int) -> None:
    sock, head = open_tunnel(envd, echo)
    assert head.startswith(b"HTTP/1.1 101 "), head
    sock.sendall(b"x" * 300_000)
    got = b""
    while len(got) < 300_000:
        got += sock.recv(65536)
    assert got == b"x" * 300_000
    sock.shutdown(socket.SHUT_WR)  # the echo server sees its end and says goodbye
    rest = b""
    while chunk := sock.recv(65536):
        rest += chunk
    assert rest == b"bye"
    sock.close()


def test_a_closed_port_is_a_clear_502(envd: Envd) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # bound, never listening: nothing answers there
    sock, head = open_tunnel(envd, port)
    status, error = error_of(sock, head)
    assert status == 502
    assert error == {
        "code": "connection_refused",
        "message": f"nothing is listening on port {port} in the capsule",
    }


@pytest.mark.parametrize("port", ["0", "65536", "abc", ""])
def test_bad_ports_are_refused(envd: Envd, port: str) -> None:
    status, error = error_of(*open_tunnel(envd, port))
    assert status == 400 and "port" in error["message"]


def test_envds_own_port_is_refused(envd: Envd) -> None:
    status, _error = error_of(*open_tunnel(envd, envd.port))
    assert status == 403


def test_a_tunnel_needs_the_token(envd: Envd, echo: int) -> None:
    with socket.create_connection(("127.0.0.1", envd.port), timeout=10) as sock:
        sock.sendall(f"GET /tunnel?port={echo} HTTP/1.1\r\nHost: envd\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 401 ")
