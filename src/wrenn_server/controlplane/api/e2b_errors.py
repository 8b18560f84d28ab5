"""E2B's error body on E2B's paths: `{"code": <HTTP status>, "message": ...}`, which the `e2b`
SDK reads (it fails on anything else). Every other path keeps Wrenn's `{"error": {...}}`.

The error handlers of api/errors.py (and the dashboard's 404) stay the one table: each is
wrapped so that on an E2B path its answer is rewritten, with the same status and message. A
team over its quota is E2B's 429 there (the SDK's RateLimitException, as E2B's concurrent
sandbox limit is)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

# The E2B control API's paths (the SDK's), and nothing else of ours starts with them.
PREFIXES = ("/sandboxes", "/v2/sandboxes", "/snapshots", "/templates")
_STATUS_OF_CODE = {"quota_exceeded": 429}

Handler = Callable[[Request, Exception], Awaitable[Response]]


def is_e2b_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PREFIXES)


def _rewritten(response: Response) -> Response:
    try:
        error = json.loads(bytes(response.body))["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return response
    status = _STATUS_OF_CODE.get(code, response.status_code)
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-type")
    }
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


def _wrap(handler: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        response = await handler(request, exc)
        return _rewritten(response) if is_e2b_path(request.url.path) else response

    return handle


def install(app: FastAPI) -> None:
    """Wrap every installed error handler; call after the last one is installed."""
    for key, handler in list(app.exception_handlers.items()):
        app.exception_handlers[key] = _wrap(handler)  # type: ignore[arg-type]
