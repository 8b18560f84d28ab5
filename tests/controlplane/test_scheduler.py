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
from fastapi import FastAPI
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.agents.local import ensure_local_host
from wrenn_server.controlplane.agents.scheduler import BalancedScheduler
from wrenn_server.controlplane.db.models.capsules import Sandbox, Template
from wrenn_server.controlplane.db.models.hosts import Host
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.errors import InsufficientCapacity, ServiceUnavailable
from wrenn_server.controlplane.jobs.reconciler import Reconciler
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..fakeagent import FakeAgentServer, FakeTemplate
from .fake_hosts import fake_agent, fake_hosts, fake_pool  # noqa: F401 (fixture)
from .helpers import assert_error, bearer, signup


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
        assert await session.scalar(select(Template).where(Template.name == "snap-x")) is None
        assert await session.scalar(select(Template).where(Template.name == "base-x")) is not None


async def test_the_single_box_host_is_weighed_by_this_machine(db: Database, tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/agent.sock"
    async with db.sessionmaker() as session, transaction(session, write=True):
        host = await ensure_local_host(session, address, tmp_path)
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    assert (host.memory_mb, host.cpu_cores) == (memory_mb, os.cpu_count())


async def test_a_host_takes_only_what_it_can_hold(client: httpx.AsyncClient, db: Database) -> None:
    host = _host("10.0.4.1:1", memory_mb=8000)
    host.cpu_cores, host.disk_free_mb = 2, 10_000
    team, base = await _setup(client, db, host)
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(_capsule(team, host.id, memory_mb=6000))
        # Paused capsules hold no memory on their host.
        session.add(_capsule(team, host.id, memory_mb=6000, status="paused"))

    async def pick(scheduler: BalancedScheduler, memory_mb: int, **demand: int) -> Host:
        async with db.sessionmaker() as session:
            return await scheduler.pick(session, team, base, memory_mb, **demand)

    exact = BalancedScheduler()
    assert (await pick(exact, 2000, vcpus=2, disk_mb=10_000)).id == host.id
    with pytest.raises(InsufficientCapacity, match="no available host has 3 CPUs"):
        await pick(exact, 512, vcpus=3)
    with pytest.raises(InsufficientCapacity, match="no available host has 2001 MB of memory free"):
        await pick(exact, 2001)
    with pytest.raises(InsufficientCapacity, match="no available host has 10001 MB of disk free"):
        await pick(exact, 512, disk_mb=10_001)
    # Overcommitted 1.5 times, the host promises 12000 MB.
    lenient = BalancedScheduler(overcommit=1.5)
    assert (await pick(lenient, 6000)).id == host.id
    with pytest.raises(InsufficientCapacity, match="no available host has 6001 MB of memory free"):
        await pick(lenient, 6001)

    # A paused capsule resumes on its own host only if it has room there again.
    async with db.sessionmaker() as session:
        row = await session.get(Host, host.id)
        assert row is not None
        await exact.check_room(session, row, vcpus=2, memory_mb=2000)
        with pytest.raises(InsufficientCapacity, match="does not have 2001 MB of memory free"):
            await exact.check_room(session, row, vcpus=1, memory_mb=2001)
        with pytest.raises(InsufficientCapacity, match="fewer than 3 CPUs"):
            await exact.check_room(session, row, vcpus=3, memory_mb=1)


async def test_a_full_host_refuses_through_the_api_and_leaves_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: Database,
    fake_agent: FakeAgentServer,  # noqa: F811
) -> None:
    host = _host(fake_agent.target, memory_mb=4000)
    host.cpu_cores = 2
    owner = await signup(client)
    team = ids.TEAM.parse(owner["team_id"])
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add_all([host, Template(name="base-api", team_id=team, type="base")])
    agent = fake_agent.agent
    agent.templates["base-api"] = FakeTemplate("base-api", "image")
    app.state.hosts = fake_hosts()
    headers = bearer(owner["token"])

    async def create(**body: int) -> httpx.Response:
        return await client.post(
            "/v1/capsules", json={"template": "base-api", **body}, headers=headers
        )

    for body in ({"vcpus": 4}, {"memory_mb": 4001}):
        assert_error(await create(**body), 503, "no_hosts_available")
    made = await create(memory_mb=3000)
    assert made.status_code == 201, made.text
    paused = await client.post(f"/v1/capsules/{made.json()['id']}/pause", headers=headers)
    assert paused.status_code == 200, paused.text
    other = await create(memory_mb=2000)
    assert other.status_code == 201, other.text
    # The paused one cannot come back while the other holds the memory.
    calls = len(agent.calls)
    resumed = await client.post(f"/v1/capsules/{made.json()['id']}/resume", headers=headers)
    assert_error(resumed, 503, "no_hosts_available")
    assert agent.calls[calls:] == []
    async with db.sessionmaker() as session:
        rows = list(await session.scalars(select(Sandbox).where(Sandbox.team_id == team)))
    assert sorted(r.status for r in rows) == ["paused", "running"]
    assert agent.calls.count("CreateSandbox") == 2


async def test_the_reconciler_records_what_agents_report_of_their_host(
    db: Database,
    fake_agent: FakeAgentServer,  # noqa: F811
) -> None:
    host = _host(fake_agent.target, memory_mb=4096)
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(host)
    fake_agent.agent.resources = pb.HostResources(
        cpu_count=2, memory_mb=24_105, disk_free_mb=81_000
    )
    reconciler = Reconciler(db, fake_pool())
    await reconciler.run_once()
    async with db.sessionmaker() as session:
        row = await session.get(Host, host.id)
        assert row is not None
        assert (row.cpu_cores, row.memory_mb, row.disk_free_mb) == (2, 24_105, 81_000)
    # An agent that says nothing of its host (an older one) leaves what is known.
    fake_agent.agent.resources = None
    await reconciler.run_once()
    async with db.sessionmaker() as session:
        row = await session.get(Host, host.id)
        assert row is not None and row.disk_free_mb == 81_000
