"""Sign-in throttling: failed attempts counted per account and per client address, in the
database so that every control plane process (`wrenn server --workers N`, several machines)
sees the same counts.

Rules (`Limits` from the settings):
- An attempt is counted when it starts (`begin_attempt`), in a write transaction that first
  checks the locks: concurrent guesses cannot all slip past a check made before any of them
  failed. A successful attempt then clears its account's count and gives the address its
  attempt back (`attempt_succeeded`).
- From the `threshold`-th counted attempt in a row, the key is locked for `first_lock` (1 s by
  default), then twice that, four times, ... up to `max_lock`: an attempt on a locked key is
  refused with a 429 and `Retry-After`, and is not counted (a lock never grows while it holds).
- Counts are forgotten an hour after the last failure.
So nobody is locked out for long: at worst one guess per `max_lock` gets through for an
attacker, and the owner can sign in once the lock runs out (or reset the password by mail,
which clears the account's count). Unknown emails are counted like known ones (hashed), so the
answers do not tell which accounts exist.

Open signup counts against the address only (`email` None): its 409 for a taken email would
otherwise list the accounts at full speed (see `accounts.signup`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import LoginThrottle
from ..errors import TooManyRequests

FORGET_AFTER = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Limits:
    account_threshold: int
    address_threshold: int
    max_lock_sec: int
    first_lock_sec: float = 1.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """The keys one sign-in attempt was counted under, and the lock its count put on the
    address (undone if the attempt succeeds)."""

    account_key: str | None
    address_key: str | None
    address_lock: dt.datetime | None = None


def account_key(email: str) -> str:
    # Hashed: the table holds no list of the addresses people tried.
    return "account:" + hashlib.sha256(email.encode()).hexdigest()[:64]


def address_key(address: str | None) -> str | None:
    return f"address:{address}"[:80] if address else None


def lock_for(failures: int, threshold: int, limits: Limits) -> float:
    """Seconds a key is locked after its `failures`-th failure in a row (0: not locked)."""
    if failures < threshold:
        return 0.0
    # The exponent is capped before the power: 2**failures of a long run would be huge.
    exponent = min(failures - threshold, 62)
    return float(min(limits.first_lock_sec * 2.0**exponent, limits.max_lock_sec))


async def _row(session: AsyncSession, key: str, now: dt.datetime) -> LoginThrottle:
    """The key's row, created if missing, locked for this transaction."""
    values = {"key": key, "failures": 0, "last_failure_at": now}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert(LoginThrottle).values(**values).on_conflict_do_nothing(index_elements=["key"])
    )
    row = await session.scalar(
        select(LoginThrottle)
        .where(LoginThrottle.key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


def _retry_after(rows: list[LoginThrottle], now: dt.datetime) -> int:
    waits = [(r.locked_until - now).total_seconds() for r in rows if r.locked_until is not None]
    return max(0, math.ceil(max(waits, default=0.0)))


async def begin_attempt(
    session: AsyncSession,
    *,
    limits: Limits,
    email: str | None,
    address: str | None,
    now: dt.datetime,
) -> Attempt:
    """Count a sign-in attempt for `email` (None: the address only) from `address`;
    `TooManyRequests` if either is locked. Run in a write transaction of its own, committed
    before the password is checked."""
    attempt = Attempt(account_key(email) if email is not None else None, address_key(address))
    keyed: list[tuple[str, int]] = []
    if attempt.account_key is not None:
        keyed.append((attempt.account_key, limits.account_threshold))
    if attempt.address_key is not None:
        keyed.append((attempt.address_key, limits.address_threshold))
    rows = [await _row(session, key, now) for key, _ in keyed]
    wait = _retry_after(rows, now)
    if wait > 0:
        raise TooManyRequests("too many failed attempts: try again later", retry_after=wait)
    for row, (_key, threshold) in zip(rows, keyed, strict=True):
        if now - row.last_failure_at > FORGET_AFTER:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        seconds = lock_for(row.failures, threshold, limits)
        row.locked_until = now + dt.timedelta(seconds=seconds) if seconds else None
    await session.flush()
    address_lock = rows[-1].locked_until if attempt.address_key is not None else None
    return Attempt(attempt.account_key, attempt.address_key, address_lock)


async def attempt_succeeded(session: AsyncSession, attempt: Attempt) -> None:
    """The attempt was right: forget its account's failures, and take back the count it added
    to its address (that address's earlier failures, and any lock not of this attempt's
    making, stay: an attacker's own good password must not clear their address)."""
    if attempt.account_key is not None:
        await clear_account(session, attempt.account_key)
    if attempt.address_key is None:
        return
    row = await session.scalar(
        select(LoginThrottle).where(LoginThrottle.key == attempt.address_key).with_for_update()
    )
    if row is None:
        return
    row.failures = max(0, row.failures - 1)
    if attempt.address_lock is not None and row.locked_until == attempt.address_lock:
        # The address was not locked when the attempt began (it would have been refused).
        row.locked_until = None
    await session.flush()


async def clear_account(session: AsyncSession, key: str) -> None:
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))


async def purge(session: AsyncSession, *, now: dt.datetime) -> int:
    """Delete counts that are forgotten anyway (no failure for an hour, no lock running)."""
    result = await session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.last_failure_at < now - FORGET_AFTER,
            (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until < now),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
