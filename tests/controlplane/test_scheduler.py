"""Placement: the least loaded (by reserved memory) of the online hosts a team may use (shared
ones and its own BYOC hosts), round robin among equals, and only the holding host for a template
whose files live on one host."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from wrenn_server.controlplane.db.models.capsules import Sandbox, Template
from wrenn_server.controlplane.db.models.hosts import Host
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.errors import ServiceUnavailable
from wrenn_server.controlplane.hosts.local import ensure_local_host
from wrenn_server.controlplane.hosts.scheduler import BalancedScheduler

from .helpers import signup


def _host(
    address: str,
    *,
    status: str = "online",
    team: uuid.UUID | None = None,
    memory_mb: int | None = None,
) -> Host:
    return Host(
        id=uuid.uuid4(),
        type="byoc" if team else "regular",
        team_id=team,
        address=address,
        status=status,
        memory_mb=memory_mb,
        last_heartbeat_at=utcnow(),
    )


async def _place(
    db: Database, team: uuid.UUID, template: Template, count: int, memory_mb: int = 1000
) -> Counter[str]:
    """Where `count` capsules go, each one created (as the API does) before the next is placed."""
    scheduler = BalancedScheduler()
    placed: Counter[str] = Counter()
    for _ in range(count):
        async with db.sessionmaker() as session, transaction(session, write=True):
            host = await scheduler.pick(session, team, template, memory_mb)
            session.add(_capsule(team, host.id, memory_mb=memory_mb))
            placed[host.address or ""] += 1
    return placed


def _capsule(
    team: uuid.UUID, host: uuid.UUID, *, memory_mb: int, status: str = "running"
) -> Sandbox:
    return Sandbox(
        id=uuid.uuid4(),
        team_id=team,
        host_id=host,
        template="base-x",
        status=status,
        vcpus=1,
        memory_mb=memory_mb,
    )


async def _setup(
    client: httpx.AsyncClient, db: Database, *hosts: Host
) -> tuple[uuid.UUID, Template]:
    team = uuid.UUID((await signup(client))["team_id"].removeprefix("team-"))
    base = Template(name=f"base-{uuid.uuid4().hex[:6]}", team_id=team, type="base")
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add_all([*hosts, base])
    return team, base


async def test_a_bigger_host_takes_more_capsules(client: httpx.AsyncClient, db: Database) -> None:
    big, small = _host("10.0.1.1:1", memory_mb=30_000), _host("10.0.1.2:1", memory_mb=11_000)
    team, base = await _setup(client, db, big, small)
    # About 30:11, each capsule going where the share of reserved memory stays smallest.
    assert await _place(db, team, base, 12) == {"10.0.1.1:1": 9, "10.0.1.2:1": 3}


async def test_a_capsule_goes_only_where_it_fits(client: httpx.AsyncClient, db: Database) -> None:
    small, big = _host("10.0.3.1:1", memory_mb=4000), _host("10.0.3.2:1", memory_mb=64_000)
    team, base = await _setup(client, db, small, big)
    # The small host is emptier, but a 6000 MB capsule does not fit in it at all.
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add_all([_capsule(team, big.id, memory_mb=30_000)])
    assert await _place(db, team, base, 2, memory_mb=6000) == {"10.0.3.2:1": 2}
    async with db.sessionmaker() as session:
        with pytest.raises(ServiceUnavailable, match="no available host has 100000 MB"):
            await BalancedScheduler().pick(session, team, base, 100_000)


async def test_a_new_host_fills_first_and_only_live_capsules_count(
    client: httpx.AsyncClient, db: Database
) -> None:
    old, new = _host("10.0.2.1:1", memory_mb=8000), _host("10.0.2.2:1", memory_mb=8000)
    team, base = await _setup(client, db, old, new)
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add_all([_capsule(team, old.id, memory_mb=1000) for _ in range(3)])
        # Paused and stopped capsules hold no memory on their host.
        session.add_all(
            [_capsule(team, new.id, memory_mb=4000, status=s) for s in ("paused", "stopped")]
        )
    assert await _place(db, team, base, 3) == {"10.0.2.2:1": 3}
    # Now equal: round robin.
    assert await _place(db, team, base, 4) == {"10.0.2.1:1": 2, "10.0.2.2:1": 2}


async def test_round_robin_over_the_equal_hosts_a_team_may_use(
    client: httpx.AsyncClient, db: Database
) -> None:
    mine = uuid.UUID((await signup(client))["team_id"].removeprefix("team-"))
    theirs = uuid.UUID((await signup(client))["team_id"].removeprefix("team-"))
    a, b = _host("10.0.0.1:1"), _host("10.0.0.2:1")
    own = _host("10.0.0.3:1", team=mine)
    other = _host("10.0.0.4:1", team=theirs)
    down = _host("10.0.0.5:1", status="unreachable")
    base = Template(name="base-x", team_id=mine, type="base")
    pinned = Template(name="snap-x", team_id=mine, type="snapshot", host_id=b.id)
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add_all([a, b, own, other, down])
        await session.flush()
        session.add_all([base, pinned])

    scheduler = BalancedScheduler()
    async with db.sessionmaker() as session:
        picks = Counter(
            [(await scheduler.pick(session, mine, base, 512)).address for _ in range(9)]
        )
        assert picks == {"10.0.0.1:1": 3, "10.0.0.2:1": 3, "10.0.0.3:1": 3}
        for _ in range(4):
            assert (await scheduler.pick(session, mine, pinned, 512)).id == b.id

    async with db.sessionmaker() as session, transaction(session, write=True):
        held = await session.get(Host, b.id)
        assert held is not None
        held.status = "unreachable"
    async with db.sessionmaker() as session:
        with pytest.raises(ServiceUnavailable, match="holding template 'snap-x'"):
            await scheduler.pick(session, mine, pinned, 512)

    # Deleting the holding host deletes the template's row: its files went with it.
    async with db.sessionmaker() as session, transaction(session, write=True):
        held = await session.get(Host, b.id)
        await session.delete(held)
    async with db.sessionmaker() as session:
        assert await session.get(Template, "snap-x") is None
        assert await session.get(Template, "base-x") is not None


async def test_the_single_box_host_is_weighed_by_this_machine(db: Database, tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/agent.sock"
    async with db.sessionmaker() as session, transaction(session, write=True):
        host = await ensure_local_host(session, address, tmp_path)
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    assert (host.memory_mb, host.cpu_cores) == (memory_mb, os.cpu_count())
