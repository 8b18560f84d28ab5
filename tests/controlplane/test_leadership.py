"""Several control plane processes on one database: one lease decides which runs the loops that
must run once. Two `Leadership`s here stand for two processes."""

from __future__ import annotations

import asyncio

from sqlalchemy import delete, select

from wrenn_server.controlplane.db.models import Lease
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.jobs import loops
from wrenn_server.controlplane.jobs.leadership import Leadership

from ..waiting import wait_for


async def test_one_holder_at_a_time_and_a_clean_handover(db: Database) -> None:
    a, b = Leadership(db.sessionmaker), Leadership(db.sessionmaker)
    assert a.holder != b.holder
    assert await a.renew() and a.held
    assert not await b.renew() and not b.held
    assert await a.renew()  # renewing is keeping
    await a.release()
    assert not a.held
    assert await b.renew() and b.held
    assert not await a.renew()


async def test_a_lapsed_lease_is_taken_over(db: Database) -> None:
    a, b = Leadership(db.sessionmaker, ttl=0.5), Leadership(db.sessionmaker, ttl=0.5)
    assert await a.renew()  # then `a` dies: no renewal

    async def b_takes_over() -> bool:
        won = await b.renew()
        # `a` stops believing it leads before the lease lapses in the database
        assert not (won and a.held), "two holders at once"
        return won

    await wait_for(b_takes_over, 5, what="the lapsed lease taken over")
    assert not a.held
    assert not await a.renew()  # back, it finds the lease taken


async def test_the_lease_row_is_made_when_missing(db: Database) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(delete(Lease))
    a, b = Leadership(db.sessionmaker), Leadership(db.sessionmaker)
    won = await asyncio.gather(a.renew(), b.renew())
    assert sorted(won) == [False, True]
    async with db.sessionmaker() as session:
        rows = list(await session.scalars(select(Lease)))
    assert [(r.name, r.holder) for r in rows] == [("background", (a if won[0] else b).holder)]


async def test_only_the_holder_runs_the_loops_and_another_takes_over(db: Database) -> None:
    runs = {"a": 0, "b": 0}

    def counter(name: str) -> loops.Step:
        async def step() -> None:
            runs[name] += 1

        return step

    a = Leadership(db.sessionmaker, ttl=0.6)
    b = Leadership(db.sessionmaker, ttl=0.6)
    process_a = loops.running({"count": (0.05, counter("a"))}, a)
    await process_a.__aenter__()
    async with loops.running({"count": (0.05, counter("b"))}, b):
        await wait_for(lambda: runs["a"] > 3, 5, what="`a` running its loops")
        assert runs["b"] == 0
        await process_a.__aexit__(None, None, None)  # `a` stops, letting go of the lease
        stopped_at = runs["a"]
        await wait_for(lambda: runs["b"] > 3, 5, what="`b` taking over")  # at its next renewal
        assert runs["a"] == stopped_at
