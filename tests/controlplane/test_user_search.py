"""`GET /v1/users/search`: email-prefix lookup with '@' required, literal LIKE metacharacters
and a result cap."""

from __future__ import annotations

import httpx
import pytest

from wrenn_server.controlplane.db.models import User
from wrenn_server.controlplane.db.session import Database, transaction

from .helpers import assert_error, bearer, signup


async def _users(db: Database, *emails: str, active: bool = True) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add_all(User(email=e, name="", is_active=active) for e in emails)


async def _search(client: httpx.AsyncClient, token: str, prefix: str) -> list[str]:
    resp = await client.get("/v1/users/search", params={"email": prefix}, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    return [r["email"] for r in resp.json()]


async def test_prefix_match(client: httpx.AsyncClient, db: Database) -> None:
    me = await signup(client, email="me@home.test")
    await _users(db, "alice@example.com", "alice@example.org", "alicia@example.com")
    await _users(db, "alice@inactive.test", active=False)
    resp = await client.get(
        "/v1/users/search", params={"email": "alice@ex"}, headers=bearer(me["token"])
    )
    assert resp.status_code == 200
    results = resp.json()
    assert [r["email"] for r in results] == ["alice@example.com", "alice@example.org"]
    assert all(set(r) == {"user_id", "email"} and r["user_id"].startswith("usr-") for r in results)
    assert await _search(client, me["token"], "  ALICE@EXAMPLE.C") == ["alice@example.com"]
    assert await _search(client, me["token"], "me@") == ["me@home.test"]
    assert await _search(client, me["token"], "zed@") == []


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("a_b@", ["a_b@x.test"]),  # '_' would match any one character
        ("a%b@", ["a%b@x.test"]),  # '%' would match any run
        ("a\\b@", ["a\\b@x.test"]),  # '\' would escape the next character on PostgreSQL
        ("%@", []),
        ("_@", []),
    ],
)
async def test_like_metacharacters_match_literally(
    client: httpx.AsyncClient, db: Database, prefix: str, expected: list[str]
) -> None:
    me = await signup(client, email="searcher@home.test")
    await _users(
        db, "a_b@x.test", "axb@x.test", "a%b@x.test", "azzb@x.test", "a\\b@x.test", "ab@x.test"
    )
    assert await _search(client, me["token"], prefix) == expected


async def test_results_are_capped(client: httpx.AsyncClient, db: Database) -> None:
    me = await signup(client)
    await _users(db, *(f"bulk@d{i:02}.test" for i in range(12)))
    assert await _search(client, me["token"], "bulk@") == [f"bulk@d{i:02}.test" for i in range(10)]


async def test_refusals(client: httpx.AsyncClient, db: Database) -> None:
    me = await signup(client)
    await _users(db, "alice@example.com")
    for params in ({"email": "alice"}, {"email": "%"}, {"email": ""}, {}, {"email": "a@" * 200}):
        resp = await client.get("/v1/users/search", params=params, headers=bearer(me["token"]))
        assert_error(resp, 400, "invalid_request")
    assert_error(
        await client.get("/v1/users/search", params={"email": "alice@"}), 401, "unauthorized"
    )
    key = await client.post("/v1/api-keys", json={}, headers=bearer(me["token"]))
    resp = await client.get(
        "/v1/users/search", params={"email": "alice@"}, headers={"X-API-Key": key.json()["key"]}
    )
    assert_error(resp, 401, "unauthorized")
