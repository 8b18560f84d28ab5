"""Accounts and capsules through the REST API, as a client of the platform makes them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.sql import Executable

from wrenn_server.controlplane.db.models import User
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.services import cache_sync

from ..controlplane.helpers import PASSWORD, bearer


@dataclass(frozen=True)
class Account:
    """A user with their default team, a JWT and an API key of that team."""

    email: str
    token: str
    team_id: str
    key: str

    @property
    def h(self) -> dict[str, str]:
        """The API key's headers, as the SDK sends them."""
        return {"X-API-Key": self.key}

    @property
    def jwt(self) -> dict[str, str]:
        return bearer(self.token)


async def new_account(client: httpx.AsyncClient) -> Account:
    email = f"orch-{uuid.uuid4().hex[:10]}@example.com"
    resp = await client.post(
        "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Orchestrated"}
    )
    assert resp.status_code == 201, resp.text
    token = resp.json()["token"]
    resp = await client.post("/v1/api-keys", json={"name": "orchestration"}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    key = resp.json()
    return Account(email, token, key["team_id"], key["key"])


async def new_admin(client: httpx.AsyncClient, db: Database) -> Account:
    account = await new_account(client)
    async with db.sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.email == account.email).values(is_admin=True))
    return account


async def make_capsule(client: httpx.AsyncClient, account: Account, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/capsules", json=body, headers=account.h)
    assert resp.status_code == 201, resp.text
    capsule: dict[str, Any] = resp.json()
    assert capsule["status"] == "running"
    return capsule


async def capsule_status(client: httpx.AsyncClient, account: Account, capsule_id: str) -> str:
    resp = await client.get(f"/v1/capsules/{capsule_id}", headers=account.h)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["status"])


async def write_elsewhere(db: Database, statement: Executable) -> None:
    """`statement` as another control plane process commits it: this process's ORM session
    hooks never see it, and on PostgreSQL its transaction sends the cache notification every
    process's writes send (services/cache_sync.py)."""
    async with db.engine.begin() as conn:
        await conn.execute(statement)
        if db.dialect == "postgresql":
            await conn.execute(select(func.pg_notify(cache_sync.CHANNEL, "another-process")))
