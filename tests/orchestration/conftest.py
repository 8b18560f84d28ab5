"""Fixtures for orchestration tests: the control plane app built by `create_app` and run through
its lifespan (single-box bootstrap, reconciler, build workers), over an in-process fake host
agent (tests/fakeagent) that speaks the real gRPC interface. No root, no gVisor: every test runs
on SQLite and on PostgreSQL (the control plane tier's databases, emptied for each test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_ws.transport import ASGIWebSocketTransport
from pydantic import SecretStr

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.settings import Settings

from ..controlplane.conftest import TEST_JWT_SECRET, db, dialect, migrated_database  # noqa: F401
from ..fakeagent import FakeAgentServer, FakeHostAgent

BASE_URL = "http://wrenn.test"


class _WebSocketTransport(ASGIWebSocketTransport):
    """httpx-ws's in-process transport, offering the WebSocket denial-response extension as
    uvicorn does: a refused upgrade answers with the REST error, not a bare close."""

    async def _handle_ws_request(self, request: httpx.Request, scope: dict[str, Any]) -> Any:
        scope["extensions"] = {"websocket.http.response": {}}
        return await super()._handle_ws_request(request, scope)


@dataclass
class Stack:
    app: FastAPI
    client: httpx.AsyncClient
    server: FakeAgentServer
    db: Database

    @property
    def agent(self) -> FakeHostAgent:
        return self.server.agent

    @asynccontextmanager
    async def ws_client(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client that also speaks WebSocket to the app. Opened inside a test: its transport
        runs the app in a task group, which must close in the task that opened it."""
        async with (
            _WebSocketTransport(app=self.app, initial_receive_timeout=10) as transport,
            httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=30) as client,
        ):
            yield client


StartApp = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
async def fake_agent() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


@pytest.fixture
def start_app(db: Database, fake_agent: FakeAgentServer, tmp_path: Path) -> StartApp:  # noqa: F811
    """`async with start_app(reconcile_interval_sec=0.1) as stack:` runs an app through its
    lifespan with the fake agent as its single-box host; other keyword arguments are settings.
    The reconciler and the stats sampler are off unless asked for."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Stack]:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "controlplane",
            "database_url": db.url,
            "jwt_secret": SecretStr(TEST_JWT_SECRET),
            "migrate_on_start": False,
            "agent_address": fake_agent.target,
            "agent_secret": SecretStr(fake_agent.secret),
            "reconcile_interval_sec": 0,
            "stats_sample_interval_sec": 0,
            "redis_url": None,
            **overrides,
        }
        app = create_app(Settings(**values), db=db)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url=BASE_URL, timeout=30
            ) as client:
                yield Stack(app, client, fake_agent, db)

    return start


@pytest.fixture
async def stack(start_app: StartApp) -> AsyncIterator[Stack]:
    """An app without the reconciler: what the routes do, and nothing else."""
    async with start_app() as running:
        yield running
