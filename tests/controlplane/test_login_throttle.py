"""Sign-in throttling: per account and per client address, shared by every control plane process
through the database, bounded so that nobody is locked out for long."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models import LoginThrottle, User
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.services import throttle
from wrenn_server.controlplane.settings import Settings

from .helpers import PASSWORD, assert_error, count, signup

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def api(settings: Settings, db: Database) -> Client:
    """`api(address=..., **settings)`: a client of a new app (a process of its own, as far as
    state goes) on the shared database, calling from `address`."""

    @asynccontextmanager
    async def make(
        address: str = "192.0.2.10", **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings.model_copy(update=overrides), db=db)
        transport = httpx.ASGITransport(
            app=app, raise_app_exceptions=False, client=(address, 40000)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as c:
            yield c

    return make


async def attempt(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"email": email, "password": password})


def retry_after(resp: httpx.Response) -> int:
    assert_error(resp, 429, "rate_limited")
    return int(resp.headers["retry-after"])


async def test_wrong_passwords_then_the_right_one_is_refused(api: Client) -> None:
    """The reported attack: 12 wrong passwords in a row, then the right one, which worked."""
    async with api(login_lockout_first_sec=60.0) as client:
        await signup(client, email="ada@example.com")
        statuses = [
            (await attempt(client, "ada@example.com", f"guess {i}")).status_code for i in range(12)
        ]
        assert statuses == [401] * 5 + [429] * 7
        right = await attempt(client, "ada@example.com", PASSWORD)
        assert 0 < retry_after(right) <= 60
        # The message says nothing about the account or the password.
        assert "ada" not in right.text and "password" not in right.json()["error"]["message"]


async def test_unknown_emails_are_throttled_like_known_ones(api: Client) -> None:
    async with api(login_lockout_first_sec=60.0) as client:
        await signup(client, email="ada@example.com")
        for email in ("ada@example.com", "nobody@example.com"):
            statuses = [(await attempt(client, email, f"guess {i}")).status_code for i in range(6)]
            assert statuses == [401] * 5 + [429], email


async def test_the_lock_runs_out_and_a_success_clears_the_count(api: Client) -> None:
    async with api(login_lockout_first_sec=1.0, login_lockout_max_sec=2) as client:
        await signup(client, email="ada@example.com")
        for i in range(5):
            assert (await attempt(client, "ada@example.com", f"guess {i}")).status_code == 401
        deadline = time.monotonic() + 10
        while (resp := await attempt(client, "ada@example.com", PASSWORD)).status_code == 429:
            assert retry_after(resp) <= 2
            assert time.monotonic() < deadline, "the lock did not run out"
            await asyncio.sleep(0.1)
        assert resp.status_code == 200, resp.text
        # The success cleared the account's failures: a new typo is just a 401.
        for i in range(4):
            assert (await attempt(client, "ada@example.com", f"typo {i}")).status_code == 401
        assert (await attempt(client, "ada@example.com", PASSWORD)).status_code == 200


async def test_an_attacker_cannot_lock_the_owner_out_for_long(api: Client) -> None:
    """However many failures, a lock never exceeds the cap, and attempts refused while it holds
    do not extend it: the owner gets in once it runs out."""
    async with api(login_lockout_first_sec=1.0, login_lockout_max_sec=2) as attacker:
        await signup(attacker, email="ada@example.com")
        hammering_until = time.monotonic() + 4
        refused = 0
        while time.monotonic() < hammering_until:
            resp = await attempt(attacker, "ada@example.com", "guess")
            if resp.status_code == 429:
                refused += 1
                assert retry_after(resp) <= 2
        assert refused > 0
    async with api(address="198.51.100.7") as owner:
        deadline = time.monotonic() + 10
        while (resp := await attempt(owner, "ada@example.com", PASSWORD)).status_code == 429:
            assert retry_after(resp) <= 2
            assert time.monotonic() < deadline, "the owner stayed locked out"
            await asyncio.sleep(0.1)
        assert resp.status_code == 200


async def test_one_address_spraying_many_accounts_is_throttled(api: Client) -> None:
    async with api(login_lockout_first_sec=60.0, login_max_failures_per_address=8) as sprayer:
        await signup(sprayer, email="ada@example.com")
        statuses = [
            (await attempt(sprayer, f"user{i}@example.com", "password1")).status_code
            for i in range(10)
        ]
        assert statuses == [401] * 8 + [429] * 2
        # Even the right password of a real account, from that address.
        retry_after(await attempt(sprayer, "ada@example.com", PASSWORD))
    # Another address is not affected, and neither are those accounts.
    async with api(address="198.51.100.7") as elsewhere:
        assert (await attempt(elsewhere, "ada@example.com", PASSWORD)).status_code == 200


async def test_an_own_good_password_does_not_clear_the_address(api: Client) -> None:
    """A sprayer with one valid account cannot reset its address's count by signing in."""
    async with api(login_lockout_first_sec=60.0, login_max_failures_per_address=4) as sprayer:
        await signup(sprayer, email="mallory@example.com")
        for i in range(3):
            assert (await attempt(sprayer, f"v{i}@example.com", "x" * 8)).status_code == 401
        assert (await attempt(sprayer, "mallory@example.com", PASSWORD)).status_code == 200
        assert (await attempt(sprayer, "v3@example.com", "x" * 8)).status_code == 401
        retry_after(await attempt(sprayer, "v4@example.com", "x" * 8))


async def test_the_count_is_shared_by_every_process(api: Client) -> None:
    """Two apps on one database (as `wrenn server --workers 2`): failures against either count
    for both, so spreading guesses over processes gains nothing."""
    async with (
        api(login_lockout_first_sec=60.0) as first,
        api(login_lockout_first_sec=60.0) as second,
    ):
        await signup(first, email="ada@example.com")
        for i in range(5):
            process = first if i % 2 else second
            assert (await attempt(process, "ada@example.com", f"guess {i}")).status_code == 401
        retry_after(await attempt(first, "ada@example.com", PASSWORD))
        retry_after(await attempt(second, "ada@example.com", PASSWORD))


async def test_concurrent_guesses_cannot_slip_past_the_check(api: Client) -> None:
    async with api(login_lockout_first_sec=60.0) as client:
        await signup(client, email="ada@example.com")
        answers = await asyncio.gather(
            *(attempt(client, "ada@example.com", f"guess {i}") for i in range(20))
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [401] * 5 + [429] * 15


async def new_account(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(
        "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Someone"}
    )


async def test_open_signup_cannot_list_accounts_at_speed(api: Client, db: Database) -> None:
    """The reported attack: open signup answers 409 for a taken email, so one address could
    test emails as fast as it liked. Those 409s count like failed sign-ins of the address (in
    the database: two processes share the count), then every signup from it waits."""
    async with (
        api(signup="open", login_lockout_first_sec=60.0) as first,
        api(signup="open", login_lockout_first_sec=60.0) as second,
    ):
        taken = [f"taken{i}@example.com" for i in range(3)]
        for email in taken:
            await signup(first, email=email)
        answers = [await new_account(first if i % 2 else second, taken[i % 3]) for i in range(25)]
        statuses = [a.status_code for a in answers]
        assert statuses == [409] * 20 + [429] * 5
        assert 0 < retry_after(answers[-1]) <= 60
        # A fresh email from that address waits too (the answer says nothing of the email).
        fresh = await new_account(first, "fresh@example.com")
        assert 0 < retry_after(fresh) <= 60
        assert fresh.json() == answers[-1].json()
        assert await count(db, User) == 3
    async with api(signup="open", address="198.51.100.7") as elsewhere:
        assert_error(await new_account(elsewhere, taken[0]), 409, "email_taken")
        assert (await new_account(elsewhere, "fresh@example.com")).status_code == 201


async def test_a_successful_signup_does_not_clear_the_address(api: Client) -> None:
    """New accounts give back their own count only: creating one now and then does not reset
    the address between batches of taken emails."""
    overrides: dict[str, Any] = {
        "signup": "open",
        "login_lockout_first_sec": 60.0,
        "login_max_failures_per_address": 4,
    }
    async with api(**overrides) as client:
        await signup(client, email="ada@example.com")
        for _ in range(3):
            assert (await new_account(client, "ada@example.com")).status_code == 409
        await signup(client, email="mallory@example.com")
        assert (await new_account(client, "ada@example.com")).status_code == 409
        retry_after(await new_account(client, "ada@example.com"))
        retry_after(await new_account(client, "mallory2@example.com"))


def test_lock_lengths() -> None:
    limits = throttle.Limits(
        account_threshold=5, address_threshold=20, max_lock_sec=900, first_lock_sec=1.0
    )
    assert [throttle.lock_for(n, 5, limits) for n in range(1, 10)] == [
        0, 0, 0, 0, 1, 2, 4, 8, 16,
    ]  # fmt: skip
    assert throttle.lock_for(10_000, 5, limits) == 900


async def test_forgotten_counts_are_purged(api: Client, db: Database) -> None:
    async with api() as client:
        await signup(client, email="ada@example.com")
        assert (await attempt(client, "ada@example.com", "wrong")).status_code == 401
    assert await count(db, LoginThrottle) == 2  # the account and the address
    async with db.sessionmaker() as session, transaction(session, write=True):
        now = dt.datetime.now(dt.UTC)
        assert await throttle.purge(session, now=now) == 0
        assert await throttle.purge(session, now=now + dt.timedelta(hours=2)) == 2
    assert await count(db, LoginThrottle) == 0
