"""Fixtures for REST API tests: the control plane app in-process, over the real host agent.

The app is built by `create_app(Settings(...))`, driven through its lifespan (single-box
bootstrap of the local host and the base template row, reconciler task when asked for) and called
with `httpx.AsyncClient(transport=ASGITransport(app))`. Databases are real: SQLite, and PostgreSQL
from the control plane tests' throwaway cluster, each migrated once per session and emptied for
every test. A test runs on SQLite unless it is marked `@both_dialects` (or its module is), which
runs it on both.

Every capsule and snapshot template the app made is destroyed on the agent after the test,
whatever happened.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.migrate import migrate
from wrenn_server.controlplane.db.models import User
from wrenn_server.controlplane.db.models.capsules import Sandbox, Template
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.settings import Settings
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.conftest import _empty_tables
from ..controlplane.helpers import PASSWORD, bearer

DIALECTS = ("sqlite", "postgresql")
both_dialects = pytest.mark.parametrize("rest_dialect", DIALECTS, indirect=True)
"""Run the test (or every test of a module, as `pytestmark`) on SQLite and PostgreSQL."""

JWT_SECRET = secrets.token_urlsafe(48)
BASE_TEMPLATE = Settings().base_template
_emails = itertools.count()


@pytest.fixture
def rest_dialect(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


class _Databases:
    """One migrated database per dialect, made on first use (PostgreSQL only if a test asks)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.by_dialect: dict[str, Database] = {}

    async def get(self, dialect: str, request: pytest.FixtureRequest) -> Database:
        if dialect not in self.by_dialect:
            name = f"wrenn_rest_{uuid.uuid4().hex[:12]}"
            if dialect == "sqlite":
                url = f"sqlite+aiosqlite:///{self.tmp / (name + '.db')}"
            else:
                url = request.getfixturevalue("pg_cluster").create_database(name)
            await migrate(url)
            self.by_dialect[dialect] = Database(url)
        return self.by_dialect[dialect]

    async def dispose(self) -> None:
        for database in self.by_dialect.values():
            await database.dispose()


@pytest.fixture(scope="session")
async def rest_databases(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[_Databases]:
    databases = _Databases(tmp_path_factory.mktemp("rest-db"))
    yield databases
    await databases.dispose()


@pytest.fixture
async def rest_db(
    rest_dialect: str,
    rest_databases: _Databases,
    request: pytest.FixtureRequest,
    agent: AgentClient,
) -> AsyncIterator[Database]:
    """The dialect's migrated database, emptied for this test. On teardown, everything the
    test's apps left on the agent (capsules, then snapshot templates) is destroyed."""
    database = await rest_databases.get(rest_dialect, request)
    await _empty_tables(database)
    async with database.sessionmaker() as session, session.begin():
        # The platform's operator: the first account of a platform is its admin (`wrenn up`
        # makes it), so the accounts tests sign up are ordinary users.
        session.add(User(email="operator@example.com", name="Operator", is_admin=True))
    yield database
    async with database.sessionmaker() as session:
        capsules = list(await session.scalars(select(Sandbox.id)))
        snapshots = list(
            await session.scalars(
                select(Template.storage_name).where(Template.storage_name != BASE_TEMPLATE)
            )
        )
    for sandbox_id in capsules:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=ids.SANDBOX.format(sandbox_id)))
    for name in snapshots:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await agent.delete_snapshot(pb.DeleteSnapshotRequest(name=name))


@dataclass
class RestApp:
    app: FastAPI
    client: httpx.AsyncClient


StartApp = Callable[..., AbstractAsyncContextManager[RestApp]]


@pytest.fixture
def start_app(rest_db: Database, tmp_path: Path, agent_process: Any) -> StartApp:
    """`async with start_app(reconcile_interval_sec=0.2) as rest:` runs an app through its
    lifespan; `rest.client` calls it in-process. Other keyword arguments are settings."""
    from .conftest import SECRET

    @asynccontextmanager
    async def start(
        reconcile_interval_sec: float = 0.0, **overrides: Any
    ) -> AsyncIterator[RestApp]:
        settings = Settings(
            data_dir=overrides.pop("data_dir", tmp_path / "controlplane"),
            database_url=rest_db.url,
            jwt_secret=SecretStr(JWT_SECRET),
            migrate_on_start=False,
            agent_address=agent_process.target,
            agent_secret=SecretStr(SECRET),
            reconcile_interval_sec=reconcile_interval_sec,
            **overrides,
        )
        app = create_app(settings, db=rest_db)
        async with app.router.lifespan_context(app):
            # raise_app_exceptions=False: a 500 reaches the test as the client would see it.
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://wrenn.test", timeout=120
            ) as client:
                yield RestApp(app, client)

    return start


@pytest.fixture
async def api(start_app: StartApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app without the reconciler (tests see only what the routes do)."""
    async with start_app() as rest:
        yield rest.client


@dataclass(frozen=True)
class Account:
    """A user with their default team, a JWT and an API key of that team."""

    email: str
    token: str
    team_id: str
    key: str
    key_id: str

    @property
    def h(self) -> dict[str, str]:
        """Headers of the API key, as the SDK sends them."""
        return {"X-API-Key": self.key}

    @property
    def jwt(self) -> dict[str, str]:
        return bearer(self.token)


async def new_account(client: httpx.AsyncClient) -> Account:
    email = f"rest-{next(_emails)}-{uuid.uuid4().hex[:6]}@example.com"
    resp = await client.post(
        "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Rest Tester"}
    )
    assert resp.status_code == 201, resp.text
    token = resp.json()["token"]
    resp = await client.post("/v1/api-keys", json={"name": "rest tests"}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    key = resp.json()
    return Account(email, token, key["team_id"], key["key"], key["id"])


async def make_capsule(client: httpx.AsyncClient, account: Account, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/capsules", json=body, headers=account.h)
    assert resp.status_code == 201, resp.text
    capsule: dict[str, Any] = resp.json()
    assert capsule["status"] == "running"
    return capsule


async def sh(
    client: httpx.AsyncClient, account: Account, capsule_id: str, script: str
) -> dict[str, Any]:
    """Run a shell script in the capsule through the REST exec route; it must succeed."""
    resp = await client.post(
        f"/v1/capsules/{capsule_id}/exec",
        json={"cmd": "sh", "args": ["-c", script]},
        headers=account.h,
    )
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    assert result["exit_code"] == 0, result
    return result


async def status_of(client: httpx.AsyncClient, account: Account, capsule_id: str) -> str:
    resp = await client.get(f"/v1/capsules/{capsule_id}", headers=account.h)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["status"])


@dataclass(frozen=True)
class Call:
    """One request to a capsule route: `route` is the path template as the OpenAPI document
    names it, for checking that a table covers every route."""

    method: str
    route: str
    kwargs: dict[str, Any]

    def path(self, capsule_id: str) -> str:
        return (
            self.route.replace("{id}", capsule_id)
            .replace("{selector}", "1")
            .replace("{port}", "8000")
        )

    async def send(
        self, client: httpx.AsyncClient, capsule_id: str, headers: dict[str, str]
    ) -> httpx.Response:
        return await client.request(
            self.method, self.path(capsule_id), headers=headers, **self.kwargs
        )


def _upload(path: str) -> dict[str, Any]:
    return {"data": {"path": path}, "files": {"file": ("x", b"intruder\n")}}


# Every route under /v1/capsules/{id}, with a valid request. Destructive ones come last.
CAPSULE_CALLS = [
    Call("GET", "/v1/capsules/{id}", {}),
    Call("PATCH", "/v1/capsules/{id}", {"json": {"auto_resume": True, "public_ports": [8000]}}),
    Call("GET", "/v1/capsules/{id}/metrics", {}),
    Call("POST", "/v1/capsules/{id}/ping", {}),
    Call("POST", "/v1/capsules/{id}/exec", {"json": {"cmd": "touch", "args": ["/tmp/pwned"]}}),
    Call("GET", "/v1/capsules/{id}/processes", {}),
    Call("DELETE", "/v1/capsules/{id}/processes/{selector}", {}),
    Call("GET", "/v1/capsules/{id}/ports", {}),
    Call("POST", "/v1/capsules/{id}/ports/{port}/url", {}),
    Call("POST", "/v1/capsules/{id}/files/write", _upload("/tmp/pwned")),
    Call("POST", "/v1/capsules/{id}/files/stream/write", _upload("/tmp/pwned")),
    Call("POST", "/v1/capsules/{id}/files/read", {"json": {"path": "/etc/hostname"}}),
    Call("POST", "/v1/capsules/{id}/files/stream/read", {"json": {"path": "/etc/hostname"}}),
    Call("POST", "/v1/capsules/{id}/files/list", {"json": {"path": "/"}}),
    Call("POST", "/v1/capsules/{id}/files/mkdir", {"json": {"path": "/tmp/pwned-dir"}}),
    Call("POST", "/v1/capsules/{id}/files/remove", {"json": {"path": "/etc/hostname"}}),
    Call("POST", "/v1/capsules/{id}/pause", {}),
    Call("POST", "/v1/capsules/{id}/resume", {}),
    Call("DELETE", "/v1/capsules/{id}", {}),
]
# The routes that need a running capsule (all but get, update, destroy, metrics, pause,
# resume, and preview links, which a paused capsule with auto_resume answers).
RUNNING_ONLY = [
    c
    for c in CAPSULE_CALLS
    if c.route.rsplit("/", 1)[-1] not in ("{id}", "metrics", "pause", "resume", "url")
]
