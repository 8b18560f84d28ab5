"""Capsule WebSockets: streamed exec, interactive PTY, reattaching to a process.

Each route checks the caller and the capsule (`api/ws.open_capsule`: wrong credentials refuse the
upgrade with a 401; a stream that cannot start is an `error` message on the accepted socket, as
in the Go system), then hands the socket to a session in `services/streams/`, which speaks the
contract's messages.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from ...services import streams
from ..ws import SocketChannel, close, open_capsule

router = APIRouter(prefix="/v1/capsules", tags=["capsules"])


@router.websocket("/{id}/exec/stream", name="execStream")
async def exec_stream(websocket: WebSocket, id: str) -> None:
    client = await open_capsule(websocket, id)
    if client is None:
        return
    await close(websocket, await streams.exec_session(SocketChannel(websocket), client, id))


@router.websocket("/{id}/pty", name="ptySession")
async def pty_session(websocket: WebSocket, id: str) -> None:
    client = await open_capsule(websocket, id, pty=True)
    if client is None:
        return
    await close(websocket, await streams.pty_session(SocketChannel(websocket), client, id))


@router.websocket("/{id}/processes/{selector}/stream", name="connectProcess")
async def connect_process(websocket: WebSocket, id: str, selector: str) -> None:
    client = await open_capsule(websocket, id, sends_first=False)
    if client is None:
        return
    channel = SocketChannel(websocket)
    await close(websocket, await streams.attach_session(channel, client, id, selector))
