"""What every fake agent call goes through first, as in the real agent's guards: the bearer
secret (else UNAUTHENTICATED), the injected faults, then the request's sandbox id and template
names (else INVALID_ARGUMENT). A `Refused` from the handler becomes its status code."""

from __future__ import annotations

import functools
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

import grpc

from .errors import Refused
from .faults import Faults
from .sandbox import check_name, check_sandbox_id

Ctx = grpc.aio.ServicerContext[Any, Any]
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Guarded(Protocol):
    secret: str
    calls: list[str]
    faults: Faults


Agent = TypeVar("Agent", bound=Guarded)


async def admit(agent: Guarded, method: str, request: object, context: Ctx) -> None:
    expected = f"Bearer {agent.secret}".encode()
    presented = b""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            presented = value.encode() if isinstance(value, str) else value
    if not hmac.compare_digest(presented, expected):
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, "invalid agent credentials")
    agent.calls.append(method)
    await agent.faults.before(method)
    if sandbox_id := getattr(request, "sandbox_id", ""):
        check_sandbox_id(sandbox_id)
    for field in ("name", "template"):
        if value := getattr(request, field, ""):
            check_name(value)


def unary(
    fn: Callable[[Agent, Req, Ctx], Awaitable[Resp]],
) -> Callable[[Agent, Req, Ctx], Coroutine[Any, Any, Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Agent, request: Req, context: Ctx) -> Resp:
        try:
            await admit(self, fn.__name__, request, context)
            reply = await fn(self, request, context)
            await self.faults.after(fn.__name__)
            return reply
        except Refused as e:
            await context.abort(e.code, e.message)

    return wrapper


def streaming(
    fn: Callable[[Agent, Req, Ctx], AsyncIterator[Resp]],
) -> Callable[[Agent, Req, Ctx], AsyncIterator[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Agent, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        try:
            await admit(self, fn.__name__, request, context)
            async for item in fn(self, request, context):
                yield item
        except Refused as e:
            await context.abort(e.code, e.message)

    return wrapper
