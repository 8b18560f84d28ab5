"""The caller's side of a stream session: the `Channel` it speaks through, the close codes a
session ends with, and the error that ends one with a message for the caller."""

from __future__ import annotations

import json
from typing import Any, Protocol

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # the caller broke the protocol, or asked for something refused
CLOSE_INTERNAL = 1011  # the host or the control plane failed


class ChannelClosed(Exception):
    """The caller went away: nobody is left to tell anything."""


class Channel(Protocol):
    """The caller's side of a session (a WebSocket, in practice)."""

    async def receive(self) -> str | bytes | None:
        """The next text or binary message; None once the caller has gone."""
        ...

    async def send_text(self, data: str) -> None:
        """Raises ChannelClosed when the caller has gone."""
        ...

    async def send_bytes(self, data: bytes) -> None:
        """Raises ChannelClosed when the caller has gone."""
        ...


class SessionError(Exception):
    """Ends a session: `message` goes to the caller, who must be allowed to see it."""

    def __init__(self, message: str, close_code: int = CLOSE_POLICY) -> None:
        super().__init__(message)
        self.message = message
        self.close_code = close_code


async def send_json(channel: Channel, message: dict[str, Any]) -> None:
    await channel.send_text(json.dumps(message, separators=(",", ":")))
