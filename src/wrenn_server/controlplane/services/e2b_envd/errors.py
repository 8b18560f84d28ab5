"""Domain errors and failed agent calls as the Connect codes E2B's SDKs map to their exceptions
(NOT_FOUND -> NotFoundException, INVALID_ARGUMENT -> InvalidArgumentException, ...). Messages
are the domain errors' own, which never carry internals (agents/rpc.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from ... import errors
from ...agents.rpc import translate

_CODES: list[tuple[type[errors.DomainError], Code]] = [
    (errors.Unauthorized, Code.UNAUTHENTICATED),
    (errors.BadRequest, Code.INVALID_ARGUMENT),
    (errors.Forbidden, Code.PERMISSION_DENIED),
    (errors.NotFound, Code.NOT_FOUND),
    (errors.InvalidState, Code.FAILED_PRECONDITION),
    (errors.Conflict, Code.ALREADY_EXISTS),
    (errors.TooManyRequests, Code.RESOURCE_EXHAUSTED),
    (errors.TooLarge, Code.RESOURCE_EXHAUSTED),
    (errors.ServiceUnavailable, Code.UNAVAILABLE),
    (errors.PortUnreachable, Code.UNAVAILABLE),
]


# Agent refusals E2B's SDKs tell apart, kept as they are (REST folds them into 400 and 409).
_AS_IS = {
    grpc.StatusCode.PERMISSION_DENIED: Code.PERMISSION_DENIED,
    grpc.StatusCode.ALREADY_EXISTS: Code.ALREADY_EXISTS,
}


def connect_error(error: errors.DomainError) -> ConnectError:
    for cls, code in _CODES:
        if isinstance(error, cls):
            return ConnectError(code, str(error))
    return ConnectError(Code.INTERNAL, str(error))


@contextlib.contextmanager
def as_connect(*, not_found: type[errors.DomainError] = errors.NotFound) -> Iterator[None]:
    """Domain errors and failed agent calls inside become Connect errors. `not_found` is what
    the agent's NOT_FOUND means here (see agents/rpc.py)."""
    try:
        yield
    except grpc.aio.AioRpcError as e:
        code = _AS_IS.get(e.code())
        if code is not None:  # the agent's message is about the caller's request: safe to pass on
            raise ConnectError(code, e.details() or "refused") from None
        raise connect_error(translate(e, not_found=not_found)) from None
    except errors.DomainError as e:
        raise connect_error(e) from None
