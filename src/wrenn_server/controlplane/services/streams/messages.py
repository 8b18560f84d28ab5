"""The caller's messages: JSON text decoded, then validated against the contract's shapes;
every mistake is a `SessionError` naming what is wrong."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .channel import Channel, ChannelClosed, SessionError

FIRST_MESSAGE_TIMEOUT = 60.0  # seconds the caller has to send its first message
AUTH_MESSAGE_TIMEOUT = 5.0  # seconds a caller without credentials has to send its auth message


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Auth(_Message):
    """`{"type": "auth", "token": <JWT or API key>}`: how a browser, which cannot set headers on
    a WebSocket, authenticates (the Go system's first message)."""

    token: str = Field(min_length=1, max_length=8192)


class ExecStart(_Message):
    cmd: str = Field(min_length=1)
    args: list[str] | None = None
    envs: dict[str, str] | None = None
    cwd: str | None = None
    tag: str | None = Field(None, max_length=128)
    user: str | None = Field(None, max_length=32)


class PtyStart(_Message):
    cmd: str = Field("/bin/bash", min_length=1)
    args: list[str] | None = None
    cols: int = Field(80, ge=1, le=65535)
    rows: int = Field(24, ge=1, le=65535)
    envs: dict[str, str] | None = None
    cwd: str | None = None
    user: str | None = Field(None, max_length=32)


class PtyConnect(_Message):
    tag: str | None = Field(None, min_length=1)
    pid: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_selector(self) -> PtyConnect:
        if (self.tag is None) == (self.pid is None):
            raise ValueError("send either tag or pid")
        return self


class PtyInput(_Message):
    data: str


class PtyResize(_Message):
    cols: int = Field(ge=1, le=65535)
    rows: int = Field(ge=1, le=65535)


M = TypeVar("M", bound=_Message)


def decode(raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raise SessionError("expected a JSON text message")
    try:
        msg = json.loads(raw)
    except ValueError:
        raise SessionError("message is not valid JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise SessionError('message must be a JSON object with a string "type"')
    return msg


def parse(model: type[M], msg: dict[str, Any]) -> M:
    try:
        return model.model_validate(msg)
    except ValidationError as e:
        problems = []
        for err in e.errors()[:5]:
            where = ".".join(str(part) for part in err.get("loc", ()))
            problems.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
        raise SessionError(f"invalid {msg['type']} message: {'; '.join(problems)}") from None


async def first_message(
    channel: Channel, *types: str, timeout: float | None = None
) -> dict[str, Any]:
    """The caller's first message, which must come within `timeout` seconds (default
    FIRST_MESSAGE_TIMEOUT) and be one of `types`."""
    try:
        async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT if timeout is None else timeout):
            raw = await channel.receive()
    except TimeoutError:
        raise SessionError(f"no {' or '.join(types)} message received in time") from None
    if raw is None:
        raise ChannelClosed
    msg = decode(raw)
    if msg["type"] not in types:
        raise SessionError(f"the first message must be of type {' or '.join(types)}")
    return msg
