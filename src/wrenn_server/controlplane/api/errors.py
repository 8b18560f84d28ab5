"""The one table from domain errors to HTTP, and the handlers that write the error body.

Every error leaves as `{"error": {"code": ..., "message": ...}}` with the Go system's codes, which
the SDK knows (invalid_request, unauthorized, forbidden, not_found, conflict, invalid_state,
agent_error, host_unavailable, no_hosts_available, ...). Validation
errors become 400 invalid_request; unknown routes 404 not_found; anything unexpected 500
internal_error with a fixed message, the details going to the log only. Database errors that a
retry may cure (lock timeouts, dropped connections) become 503.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors

log = logging.getLogger("wrenn.controlplane")

# Most specific first: the first class in an error's MRO that is listed here decides.
ERROR_TABLE: dict[type[errors.DomainError], tuple[int, str]] = {
    errors.InvalidID: (400, "invalid_request"),
    errors.InvalidToken: (400, "invalid_token"),
    errors.AlreadyActivated: (400, "already_activated"),
    errors.BadRequest: (400, "invalid_request"),
    errors.WrongPassword: (401, "wrong_password"),
    errors.Unauthorized: (401, "unauthorized"),
    errors.AccountNotActivated: (403, "account_not_activated"),
    errors.QuotaExceeded: (403, "quota_exceeded"),
    errors.AccountDisabled: (403, "account_disabled"),
    errors.Forbidden: (403, "forbidden"),
    errors.NotFound: (404, "not_found"),
    errors.InvalidState: (409, "invalid_state"),
    errors.HostHasCapsules: (409, "has_active_sandboxes"),
    errors.NameTaken: (409, "template_name_taken"),
    errors.NameReserved: (409, "name_reserved"),
    errors.EmailTaken: (409, "email_taken"),
    errors.OwnsTeamWithMembers: (409, "owns_team_with_members"),
    errors.SignupCooldown: (409, "signup_cooldown"),
    errors.Conflict: (409, "conflict"),
    errors.InsufficientCapacity: (503, "no_hosts_available"),
    errors.HostUnavailable: (503, "host_unavailable"),
    errors.TooManyRequests: (429, "rate_limited"),
    errors.ServiceUnavailable: (503, "service_unavailable"),
    errors.HostAgentError: (502, "agent_error"),
    errors.PortUnreachable: (502, "port_unreachable"),
    errors.TooLarge: (413, "too_large"),
}

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, **extra}}, status_code=status, headers=headers
    )


def status_for(exc: errors.DomainError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return 500, "internal_error"


async def _domain(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.DomainError)
    status, code = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, errors.TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after)}
    return error_response(status, code, exc.message, headers, **exc.details)


def _describe(error: dict[str, Any]) -> str:
    # loc is ("body", "email") and the like: the first element only says where, not what.
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    where = ".".join(loc)
    message = str(error.get("msg", "invalid value"))
    return f"{where}: {message}" if where else message


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = exc.errors()
    message = "; ".join(_describe(e) for e in details[:5]) or "invalid request"
    return error_response(400, "invalid_request", message)


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "error")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = "not found"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, message, headers)


def _retryable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig is not None else ""
    return "database is locked" in text or "could not serialize" in text or "deadlock" in text


async def _database(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, PoolTimeoutError) or (
        isinstance(exc, (OperationalError, DBAPIError)) and _retryable(exc)
    ):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "service_unavailable", "database busy, retry shortly")
    return await _unhandled(request, exc)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(DBAPIError, _database)
    app.add_exception_handler(PoolTimeoutError, _database)
    app.add_exception_handler(Exception, _unhandled)
