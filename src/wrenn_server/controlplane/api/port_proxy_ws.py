"""WebSocket upgrades through the port proxy: the caller's socket accepted here, a WebSocket
client (wsproto) to the capsule's service over the tunnel, and messages (text and binary,
fragments joined) and close codes passed both ways."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from ..errors import PortUnreachable
from ..services import proxy
from .proxy_cookies import without_preview_cookie

_DENIAL_EXTENSION = "websocket.http.response"
_SOCKET_GONE = (WebSocketDisconnect, RuntimeError, OSError)
_FORWARDED = {b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-for"}
# What wsproto writes itself, the handshake's own headers, and the platform's credentials.
_DROP = {
    b"host",
    b"connection",
    b"upgrade",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"x-api-key",
    *_FORWARDED,
}


async def refuse(websocket: WebSocket, response: JSONResponse) -> None:
    with contextlib.suppress(*_SOCKET_GONE):
        if _DENIAL_EXTENSION in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(response)
        else:
            await websocket.close(code=1008)


async def relay(
    websocket: WebSocket, tunnel: proxy.Tunnel, host: str, *, used_bearer: bool
) -> None:
    """The handshake with the service, then messages both ways until either side closes."""
    scope = websocket.scope
    upstream = WSConnection(ConnectionType.CLIENT)
    drop = _DROP | ({b"authorization"} if used_bearer else set())
    headers = [(k, v) for k, v in without_preview_cookie(scope["headers"]) if k not in drop]
    headers.append((b"x-forwarded-host", host.encode("latin-1")))
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    headers.append((b"x-forwarded-proto", scheme.encode()))
    target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    request = Request(
        host=host, target=target, extra_headers=headers, subprotocols=scope.get("subprotocols", [])
    )
    await tunnel.send(upstream.send(request))
    accepted = await _handshake(upstream, tunnel, host)
    await websocket.accept(subprotocol=accepted.subprotocol)

    async def inbound() -> None:
        """The caller's messages to the service; its close is passed on."""
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code") or 1000)
                with contextlib.suppress(Exception):
                    await tunnel.send(upstream.send(CloseConnection(code=code)))
                return
            if message.get("text") is not None:
                await tunnel.send(upstream.send(Message(data=message["text"])))
            elif message.get("bytes") is not None:
                await tunnel.send(upstream.send(Message(data=message["bytes"])))

    task = asyncio.create_task(inbound())
    try:
        await _outbound(websocket, upstream, tunnel, task)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _handshake(upstream: WSConnection, tunnel: proxy.Tunnel, host: str) -> AcceptConnection:
    while True:
        data = await tunnel.recv()
        upstream.receive_data(data or None)
        for event in upstream.events():
            if isinstance(event, AcceptConnection):
                return event
            if isinstance(event, (RejectConnection, RejectData)):
                status = event.status_code if isinstance(event, RejectConnection) else 502
                raise PortUnreachable(
                    f"the service on port {host.split('-', 1)[0]} refused the WebSocket upgrade"
                    f" ({status})"
                )
        if not data:
            raise PortUnreachable(
                f"the service on port {host.split('-', 1)[0]} closed the connection during the "
                "WebSocket handshake"
            )


async def _outbound(
    websocket: WebSocket, upstream: WSConnection, tunnel: proxy.Tunnel, inbound: asyncio.Task[None]
) -> None:
    """The service's messages to the caller, until a close from either side."""
    parts: list[str | bytes] = []
    while True:
        recv = asyncio.create_task(tunnel.recv())
        done, _ = await asyncio.wait({recv, inbound}, return_when=asyncio.FIRST_COMPLETED)
        if recv not in done:
            recv.cancel()
            with contextlib.suppress(BaseException):
                await recv
            return  # the caller left (its close went to the service)
        data = recv.result()
        upstream.receive_data(data or None)
        for event in upstream.events():
            if not await _pass_on(websocket, upstream, tunnel, event, parts):
                return
        if not data:
            with contextlib.suppress(*_SOCKET_GONE):
                await websocket.close(code=1011)
            return


async def _pass_on(
    websocket: WebSocket,
    upstream: WSConnection,
    tunnel: proxy.Tunnel,
    event: Event,
    parts: list[str | bytes],
) -> bool:
    """One event from the service; False once the socket is closed."""
    if isinstance(event, (TextMessage, BytesMessage)):
        data = event.data
        parts.append(data if isinstance(data, str) else bytes(data))
        if event.message_finished:
            if isinstance(event, TextMessage):
                await websocket.send_text("".join(p for p in parts if isinstance(p, str)))
            else:
                await websocket.send_bytes(b"".join(p for p in parts if isinstance(p, bytes)))
            parts.clear()
    elif isinstance(event, Ping):
        await tunnel.send(upstream.send(event.response()))
    elif isinstance(event, CloseConnection):
        with contextlib.suppress(Exception):
            await tunnel.send(upstream.send(event.response()))
        with contextlib.suppress(*_SOCKET_GONE):
            await websocket.close(code=event.code, reason=event.reason or None)
        return False
    return True
