"""Tunnels: the host agent's connection spliced to a port on the capsule's own loopback, so a
service listening only on 127.0.0.1 (or ::1) is reachable from outside through the agent."""

from __future__ import annotations

import socket
import threading

from .errors import ApiError

CONNECT_TIMEOUT = 5.0
# Bigger pieces mean fewer gRPC messages per byte: at 64 KiB a proxied download spent
# ~40% more CPU in the control plane (bench/proxy_bench.py).
CHUNK = 256 * 1024
REFUSED = "connection_refused"


def open_local(port: int) -> socket.socket:
    """A connection to `port` on 127.0.0.1, else on ::1; a clear error when nobody listens."""
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 in this capsule
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((address, port))
        except OSError:
            sock.close()
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise ApiError(502, "nothing is listening on port %d in the capsule" % port, REFUSED)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    """Bytes from src to dst until src's end, which is passed on as a half-close."""
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(data)
    except OSError:
        # A reset on either side ends both directions.
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def splice(client: socket.socket, upstream: socket.socket) -> None:
    """Both directions until both ends are done; closes upstream."""
    client.settimeout(None)  # a quiet WebSocket may stay open longer than a request's timeout
    back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
    back.start()
    try:
        _copy(client, upstream)
        back.join()
    finally:
        upstream.close()
