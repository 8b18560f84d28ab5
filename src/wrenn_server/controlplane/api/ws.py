"""WebSocket plumbing for capsule routes: checking the caller and the capsule, adapting the socket.

FastAPI's `Request`-based dependencies (`TeamDep`, `DatabaseDep`, ...) do not resolve for
WebSocket routes, so `open_capsule` does the same checks by hand, as the Go system does:

- credentials exactly as `CurrentPrincipal` reads them (`X-API-Key`, which wins, or
  `Authorization: Bearer <JWT>`). Credentials that are sent but wrong refuse the upgrade with the
  REST answer (401) through the ASGI denial-response extension (or, on a server without it, a
  1008 close of the handshake), as the Go system's middleware does.
- no credentials at all (a browser cannot set headers on a WebSocket): the socket is accepted and
  the first message must be `{"type": "auth", "token": <JWT or API key>}` within
  AUTH_MESSAGE_TIMEOUT seconds.
- then the principal's team's running capsule. A stream that cannot start (no such capsule,
  another team's, not running, its host unreachable) is reported on the accepted socket as the
  Go system does, `{"type": "error", "data": <message>}` (`"fatal": true` on a PTY), which the
  SDK reads as an error event, and the socket is closed: 1008 for the caller's side of things,
  1011 when the platform failed. A caller that opens the conversation (exec stream, PTY) is
  closed only once its first message has come (or CLOSE_GRACE later): the SDK sends its start
  as soon as the socket opens, and that send would fail on a socket it already saw closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from starlette.websockets import WebSocketDisconnect

from ...agentproto.client import AgentClient
from .. import ids
from ..db.session import Database
from ..errors import DomainError, Forbidden, Unauthorized
from ..security import TokenCodec, looks_like_api_key
from ..services import capsules as svc
from ..services.capsules import Hosts
from ..services.streams import ChannelClosed
from ..services.streams.channel import CLOSE_INTERNAL, CLOSE_POLICY, SessionError, send_json
from ..services.streams.messages import AUTH_MESSAGE_TIMEOUT, Auth, first_message, parse
from . import deps
from .deps import TeamContext, _api_key, _bearer
from .errors import error_response, status_for

log = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008
CLOSE_GRACE = 2.0  # seconds a refused stream waits for the caller's first message before closing
_DENIAL_EXTENSION = "websocket.http.response"
_SOCKET_GONE = (WebSocketDisconnect, RuntimeError, OSError)


async def _team(
    websocket: WebSocket,
    db: Database,
    bearer: HTTPAuthorizationCredentials | None,
    api_key: str | None,
    platform: bool = False,
) -> TeamContext:
    codec: TokenCodec = websocket.app.state.codec
    # The same principal rules as `CurrentPrincipal`, called by hand.
    principal = await deps.principal(db, codec, bearer, api_key, websocket.app.state.auth_cache)
    if platform:
        # The platform team's capsules: as `CurrentAdmin`, a platform admin's user session.
        principal.require_user()
        if not principal.is_admin:
            raise Forbidden("this needs a platform admin")
        return TeamContext(principal, ids.PLATFORM_TEAM_ID)
    return TeamContext(principal, principal.require_team())


async def _auth_message(websocket: WebSocket, db: Database, platform: bool) -> TeamContext:
    """The team of the token in the caller's first message (on an accepted socket)."""
    channel = SocketChannel(websocket)
    try:
        msg = await first_message(channel, "auth", timeout=AUTH_MESSAGE_TIMEOUT)
    except SessionError as e:
        raise Unauthorized(f"authentication failed: {e.message}") from None
    try:
        token = parse(Auth, msg).token
    except SessionError:
        raise Unauthorized('authentication failed: the auth message needs a "token"') from None
    bearer = (
        None
        if looks_like_api_key(token)
        else HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    )
    try:
        return await _team(websocket, db, bearer, None if bearer else token, platform)
    except Unauthorized as e:
        raise Unauthorized(f"authentication failed: {e.message}") from None


async def open_capsule(
    websocket: WebSocket,
    capsule_id: str,
    *,
    pty: bool = False,
    sends_first: bool = True,
    platform: bool = False,
) -> AgentClient | None:
    """Check the caller and the capsule: the agent client of the caller's running capsule, on
    an accepted socket. None when the stream cannot start (the caller was told, as the module
    docstring says) or the caller has gone. `sends_first`: the caller opens the conversation
    (a start or connect message). `platform`: a platform admin's stream to a capsule of the
    platform team (`/v1/admin/capsules`)."""
    db: Database = websocket.app.state.db
    hosts: Hosts = websocket.app.state.hosts
    accepted = False
    try:
        bearer = await _bearer(websocket)
        api_key = await _api_key(websocket)
        if bearer is None and api_key is None:
            if not await _accept(websocket):
                return None
            accepted = True
            team = await _auth_message(websocket, db, platform)
        else:
            try:
                team = await _team(websocket, db, bearer, api_key, platform)
            except Unauthorized as exc:
                await _refuse(
                    websocket,
                    error_response(
                        401, "unauthorized", exc.message, {"WWW-Authenticate": "Bearer"}
                    ),
                )
                return None
        client = await svc.running_client(db, hosts, team.team_id, capsule_id)
    except ChannelClosed:
        return None
    except DomainError as exc:
        status, _code = status_for(exc)
        message, close_code = exc.message, CLOSE_INTERNAL if status >= 500 else CLOSE_POLICY
    except Exception:
        log.exception("websocket %s could not start", websocket.url.path)
        message, close_code = "internal error", CLOSE_INTERNAL
    else:
        return client if accepted or await _accept(websocket) else None
    with contextlib.suppress(*_SOCKET_GONE):
        if not accepted:
            await websocket.accept()
        error: dict[str, object] = {"type": "error", "data": message}
        if pty:
            error["fatal"] = True
        with contextlib.suppress(ChannelClosed):
            await send_json(SocketChannel(websocket), error)
        if sends_first:
            # The SDK sends its start message as soon as the socket opens; closing before it
            # arrives would fail that send (the close already seen) before the error is read.
            with contextlib.suppress(TimeoutError, *_SOCKET_GONE):
                async with asyncio.timeout(CLOSE_GRACE):
                    await websocket.receive()
        await websocket.close(code=close_code)
    return None


async def _accept(websocket: WebSocket) -> bool:
    """Accept the upgrade; False if the caller has gone."""
    try:
        await websocket.accept()
    except _SOCKET_GONE:
        return False
    return True


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
