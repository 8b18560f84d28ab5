"""WebSocket plumbing for capsule routes: checking the upgrade request, adapting the socket.

FastAPI's `Request`-based dependencies (`TeamDep`, `DatabaseDep`, ...) do not resolve for
WebSocket routes, and an exception there cannot become the usual JSON error. So `open_capsule`
does the same checks by hand before the socket is accepted: the credentials exactly as
`CurrentPrincipal` reads them (`X-API-Key`, which wins, or `Authorization: Bearer <JWT>`), the
principal's team, then the team's running capsule. A failure refuses the upgrade with the HTTP
error a REST route would answer (401, 404 for another team's capsule, 409 when not running, ...)
through the ASGI denial-response extension, or, on a server without it, closes the handshake with
1008 (policy violation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from ...agentproto.client import AgentClient
from ..db.session import Database
from ..errors import DomainError
from ..security import TokenCodec
from ..services import capsules as svc
from ..services.capsules import Hosts
from ..services.streams import ChannelClosed
from .deps import TeamContext, _api_key, _bearer, _principal
from .errors import error_response, status_for

log = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008
_DENIAL_EXTENSION = "websocket.http.response"
_SOCKET_GONE = (WebSocketDisconnect, RuntimeError, OSError)


async def _team(websocket: WebSocket, db: Database) -> TeamContext:
    codec: TokenCodec = websocket.app.state.codec
    # The same security schemes and principal rules as `CurrentPrincipal`, called by hand.
    bearer = await _bearer(websocket)
    api_key = await _api_key(websocket)
    async with db.sessionmaker() as session:
        principal = await _principal(session, codec, bearer, api_key)
    return TeamContext(principal, principal.require_team())


async def open_capsule(websocket: WebSocket, capsule_id: str) -> AgentClient | None:
    """Check the caller and the capsule, then accept the socket: the agent client of the
    caller's running capsule. None after refusing the upgrade (or losing the caller)."""
    db: Database = websocket.app.state.db
    hosts: Hosts = websocket.app.state.hosts
    try:
        team = await _team(websocket, db)
        client = await svc.running_client(db, hosts, team.team_id, capsule_id)
    except DomainError as exc:
        status, code = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        response = error_response(status, code, exc.message, headers, **exc.details)
    except Exception:
        log.exception("refusing websocket %s: unexpected error", websocket.url.path)
        response = error_response(500, "internal_error", "internal server error")
    else:
        try:
            await websocket.accept()
        except _SOCKET_GONE:
            return None
        return client
    await _refuse(websocket, response)
    return None


async def _refuse(websocket: WebSocket, response: JSONResponse) -> None:
    with contextlib.suppress(*_SOCKET_GONE):
        if _DENIAL_EXTENSION in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(response)
        else:
            await websocket.close(code=CLOSE_POLICY_VIOLATION)


async def close(websocket: WebSocket, code: int) -> None:
    """Close an accepted socket; nothing to do if the caller has gone already."""
    with contextlib.suppress(*_SOCKET_GONE):
        await websocket.close(code=code)


class SocketChannel:
    """A `streams.Channel` over an accepted WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._gone = False
        self._send_lock = asyncio.Lock()  # the output pump and the keepalive both send

    async def receive(self) -> str | bytes | None:
        if self._gone:
            return None
        try:
            message = await self._ws.receive()
        except _SOCKET_GONE:
            message = {"type": "websocket.disconnect"}
        if message["type"] == "websocket.disconnect":
            self._gone = True
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send_text(self, data: str) -> None:
        await self._send(data)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data)

    async def _send(self, data: str | bytes) -> None:
        if self._gone:
            raise ChannelClosed
        try:
            async with self._send_lock:
                if isinstance(data, str):
                    await self._ws.send_text(data)
                else:
                    await self._ws.send_bytes(data)
        except _SOCKET_GONE:
            self._gone = True
            raise ChannelClosed from None
