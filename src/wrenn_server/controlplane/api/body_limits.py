"""Request body limits, per route, enforced as the body arrives (pure ASGI).

A declared `Content-Length` over the route's limit is answered 413 at once, before anything is
read (and the connection is closed, so the rest is never taken in); a chunked body is counted as
it is read and refused with 413 the moment it passes the limit. Routes whose bodies stream on
(file uploads to a capsule) have no limit here: they never hold the body, and the capsule's disk
bounds them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

KiB = 1024
AUTH_BODY_MAX = 64 * KiB  # sign-in, sign-up, password and host credential routes: small JSON


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body passes its limit; answered with 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit), headers={"Connection": "close"})
        self.limit = limit


def _message(limit: int) -> str:
    return f"request body too large: the limit is {limit} bytes"


@dataclass(frozen=True)
class Rule:
    """A limit for the paths `pattern` matches: `json` for any body, `multipart` for a
    multipart/form-data one (None: no limit)."""

    pattern: re.Pattern[str]
    json: int | None
    multipart: int | None


def rule(path: str, json: int | None, multipart: int | None = None) -> Rule:
    """`path` is a route path; `{name}` matches one segment, a trailing `/*` any tail."""
    regex = re.escape(path).replace(r"/\*", "(?:/.*)?")
    regex = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", regex)
    return Rule(re.compile(regex + "$"), json, multipart)


def default_rules(json_max: int, build_archive_max: int) -> list[Rule]:
    return [
        rule("/v1/auth/*", AUTH_BODY_MAX),
        rule("/v1/me/*", AUTH_BODY_MAX),
        # Host agents' credential routes, callable before anything is authenticated.
        rule("/v1/hosts/register", AUTH_BODY_MAX),
        rule("/v1/hosts/auth/refresh", AUTH_BODY_MAX),
        rule("/v1/hosts/{id}/heartbeat", AUTH_BODY_MAX),
        # Streamed to the capsule's agent as it arrives (see api/multipart.py).
        rule("/v1/capsules/{id}/files/write", json_max, None),
        rule("/v1/capsules/{id}/files/stream/write", json_max, None),
        # The form's archive is spooled to disk; its fields are small.
        rule("/v1/admin/builds", json_max, build_archive_max + 1024 * KiB),
    ]


class BodyLimits:
    def __init__(self, app: ASGIApp, rules: list[Rule], default: int) -> None:
        self.app = app
        self.rules = rules
        self.default = default

    def limit_for(self, path: str, content_type: str) -> int | None:
        multipart = content_type.startswith("multipart/form-data")
        for r in self.rules:
            if r.pattern.match(path):
                return r.multipart if multipart else r.json
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body at all (most GETs)
            return
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        limit = self.limit_for(scope["path"], content_type)
        if limit is None:
            await self.app(scope, receive, send)
            return
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(scope, receive, send, limit)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            # The app let it through (a route that read the body by hand): answer it here.
            if started:
                raise
            await _refuse(scope, receive, send, limit)


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = error_response(
        413,
        "too_large",
        _message(limit),
        # Closing the connection is what stops the client: the rest is never read.
        headers={"Connection": "close"},
    )
    await response(scope, receive, send)
