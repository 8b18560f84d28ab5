"""`/v1/sandboxes/...` is the original platform's name for `/v1/capsules/...`: the same routes
answer both (the alias stays out of the OpenAPI document)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

OLD, NEW = "/v1/sandboxes", "/v1/capsules"


class SandboxAliases:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path == OLD or path.startswith(OLD + "/"):
                scope = {**scope, "path": NEW + path[len(OLD) :]}
                if "raw_path" in scope and scope["raw_path"] is not None:
                    scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)
