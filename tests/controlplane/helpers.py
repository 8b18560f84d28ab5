"""Factories and small helpers for control plane tests."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from sqlalchemy import func, select

from wrenn_server.controlplane.db.session import Database

_counter = itertools.count()
PASSWORD = "correct horse battery"


async def signup(
    client: httpx.AsyncClient, *, email: str | None = None, name: str = "Ada Lovelace"
) -> dict[str, Any]:
    """Create an account through the API; returns the signup response body."""
    email = email or f"user{next(_counter)}@example.com"
    resp = await client.post(
        "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": name}
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def count(db: Database, model: type[Any]) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the contract's error body with `status` and `code`; returns the error."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error
