"""Capsule WebSockets: streamed exec, interactive PTY, reattaching to a process.

Each route checks the caller and the capsule before accepting the socket (`api/ws.open_capsule`;
failures refuse the upgrade with the usual HTTP error), then hands it to a session in
`services/streams/`, which speaks the contract's messages.
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
    client = await open_capsule(websocket, id)
    if client is None:
        return
    await close(websocket, await streams.pty_session(SocketChannel(websocket), client, id))


@router.websocket("/{id}/processes/{selector}/stream", name="connectProcess")
async def connect_process(websocket: WebSocket, id: str, selector: str) -> None:
    client = await open_capsule(websocket, id)
    if client is None:
        return
    channel = SocketChannel(websocket)
    await close(websocket, await streams.attach_session(channel, client, id, selector))
