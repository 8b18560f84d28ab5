"""An app behind a real uvicorn on 127.0.0.1, for tests whose clients open their own
connections (SDKs, WebSockets, streams the in-process transport would buffer whole)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from wrenn_server.cli import KEEP_ALIVE_SEC

from .ports import free_port
from .waiting import wait_for


@asynccontextmanager
async def served(
    app: Any, *, port: int | None = None, force_exit: bool = False, **config: Any
) -> AsyncIterator[str]:
    """Serve `app` (its lifespan is the caller's) until the block ends; yields the base URL.
    `force_exit` skips waiting for open connections (long-lived streams) at the end."""
    port = port or free_port()
    # The product's keep-alive, not uvicorn's 5 s: a client reusing a connection after a slow
    # step must not race the server closing it.
    config = {"timeout_keep_alive": KEEP_ALIVE_SEC, **config}
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, **config)
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), 30, what="uvicorn started")
        assert server.started, f"uvicorn exited: {task.exception()!r}"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = force_exit
        await asyncio.wait_for(task, 30)
