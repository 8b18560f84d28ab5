"""The periodic steps that are one service call in one transaction, run by `loops.py` while
this process holds the lease: the team stats sampler, the purges, webhook deliveries and the
single box's built platform templates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..db.session import Database, transaction
from ..db.types import utcnow
from ..services import bootstrap, channels, e2b_lifecycle, events, stats, throttle
from ..services.capsules import Hosts


def stats_sampler(db: Database, *, retention: dt.timedelta) -> Callable[[], Awaitable[None]]:
    """The stats sampler's step: snapshot every team, then drop what is past the retention."""

    async def step() -> None:
        async with db.sessionmaker() as session, transaction(session, write=True):
            now = utcnow()
            await stats.sample_teams(session, now=now)
            await stats.purge_snapshots(session, before=now - retention)

    return step


def login_throttle_purger(db: Database) -> Callable[[], Awaitable[int]]:
    """A step that purges forgotten login-throttle counts."""

    async def step() -> int:
        async with db.sessionmaker() as session, transaction(session, write=True):
            return await throttle.purge(session, now=dt.datetime.now(dt.UTC))

    return step


def events_purger(db: Database, *, retention: dt.timedelta) -> Callable[[], Awaitable[int]]:
    """A step that forgets lifecycle events past the stream's resume window."""

    async def step() -> int:
        async with db.sessionmaker() as session, transaction(session, write=True):
            return await events.purge(session, before=utcnow() - retention)

    return step


def channel_deliverer(db: Database, delivery: channels.Delivery) -> Callable[[], Awaitable[int]]:
    """A step that delivers new events to the teams' webhooks."""

    async def step() -> int:
        return await channels.deliver_pending(db, delivery)

    return step


def e2b_expirer(db: Database, hosts: Hosts) -> Callable[[], Awaitable[int]]:
    """A step that ends the E2B sandboxes whose time is up (killed, or paused)."""

    async def step() -> int:
        return await e2b_lifecycle.expire_due(db, hosts)

    return step


def built_templates_registrar(db: Database, *, data_dir: Path) -> Callable[[], Awaitable[None]]:
    """A step that registers platform templates the single box's agent built since the start."""

    async def step() -> None:
        async with db.sessionmaker() as session, transaction(session, write=True):
            await bootstrap.register_built_templates(session, data_dir=data_dir)

    return step
