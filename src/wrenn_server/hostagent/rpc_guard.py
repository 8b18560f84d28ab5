"""What every RPC of the agent goes through before and after its handler: the caller's
credentials, the names in its request (checked before any handler sees them), and domain errors
mapped to gRPC status codes in one table (anything else is INTERNAL with a generic message)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeAlias, TypeVar, cast

import grpc

from . import errors
from .capsule import validate_sandbox_id
from .exhaustion import host_exhausted
from .templates import validate_name

log = logging.getLogger(__name__)

# A string: grpc's context class is generic only in its type stubs.
Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# The guards keep the handler's signature, so mypy checks each handler against the generated
# servicer (hostagent_pb2_grpc.pyi).
_Unary = TypeVar("_Unary", bound=Callable[..., Awaitable[Any]])
_Streaming = TypeVar("_Streaming", bound=Callable[..., AsyncIterator[Any]])

# One table from domain errors to wire codes; anything else is INTERNAL with a generic message.
STATUS: dict[type[errors.AgentError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidState: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Timeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.RestoreFailed: grpc.StatusCode.DATA_LOSS,
}


class Guarded(Protocol):
    """The servicer, as far as the guard needs it."""

    def authorized(self, context: Ctx) -> bool: ...

    def explain(self, request: Any, error: Exception) -> Exception: ...


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls], str(exc)
    exhausted = host_exhausted(exc)
    if exhausted is not None:
        log.warning("%s", exhausted, exc_info=exc)
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exhausted)
    log.error("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


async def _authenticate(service: Guarded, context: Ctx) -> None:
    if not service.authorized(context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid agent credentials")


# Request fields that name things on disk, checked before any handler sees them.
_VALIDATORS: dict[str, Callable[[str], str]] = {
    "sandbox_id": validate_sandbox_id,
    "name": validate_name,
    "template": validate_name,
}


def check_names(request: Any) -> None:
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    for field, validate in _VALIDATORS.items():
        if field in fields and (value := getattr(request, field)):
            validate(value)


def unary(fn: _Unary) -> _Unary:
    @functools.wraps(fn)
    async def wrapper(self: Guarded, request: Any, context: Ctx) -> Any:
        await _authenticate(self, context)
        try:
            check_names(request)
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await context.abort(*status_for(self.explain(request, e)))

    return cast(_Unary, wrapper)


def streaming(fn: _Streaming) -> _Streaming:
    @functools.wraps(fn)
    async def wrapper(self: Guarded, request: Any, context: Ctx) -> AsyncIterator[Any]:
        await _authenticate(self, context)
        try:
            check_names(request)
            async for item in fn(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await context.abort(*status_for(self.explain(request, e)))

    return cast(_Streaming, wrapper)
