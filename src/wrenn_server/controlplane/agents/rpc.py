"""Calling host agents: gRPC status codes become domain errors in one place. The agent's
messages for caller errors (bad path, unknown user, ...) are safe to pass on; for its own
failures only a generic message goes out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import grpc

from ..errors import (
    BadRequest,
    DomainError,
    HostAgentError,
    HostUnavailable,
    InvalidState,
    NotFound,
    TooLarge,
)

log = logging.getLogger(__name__)

_PASS_ON: dict[grpc.StatusCode, type[DomainError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
    grpc.StatusCode.ALREADY_EXISTS: InvalidState,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidState,
    grpc.StatusCode.PERMISSION_DENIED: BadRequest,
    # A paused capsule that did not restore (502): the agent's message says what to do.
    grpc.StatusCode.DATA_LOSS: HostAgentError,
}


def translate(
    error: grpc.aio.AioRpcError,
    *,
    not_found: type[DomainError] = NotFound,
    exhausted: type[DomainError] = TooLarge,
) -> DomainError:
    """The domain error of a failed agent call. `not_found` is what the agent's NOT_FOUND means
    to the caller: a missing resource (404) by default; a bad request (400) where what the agent
    could not find is something the request named (a program to run, a template to start from)
    rather than the resource of the URL. `exhausted`, its RESOURCE_EXHAUSTED: the capsule is out
    of room (413) by default; the host is (503) where a capsule is being started."""
    code = error.code()
    if code == grpc.StatusCode.NOT_FOUND:
        cls: type[DomainError] | None = not_found
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        cls = exhausted
    else:
        cls = _PASS_ON.get(code)
    if cls is not None:
        return cls(error.details() or "request refused by the host")
    log.warning("host agent call failed: %s %s", error.code().name, error.details())
    if code == grpc.StatusCode.UNAVAILABLE:
        # Not reached (down, restarting, network): the Go system's 503, which clients retry.
        return HostUnavailable("the host is not reachable: try again later")
    return HostAgentError("host agent error")


@contextlib.contextmanager
def agent_errors(
    *, not_found: type[DomainError] = NotFound, exhausted: type[DomainError] = TooLarge
) -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as e:
        raise translate(e, not_found=not_found, exhausted=exhausted) from None
