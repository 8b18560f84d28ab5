"""Placement: round robin over the online hosts a team may use (shared ones and its own BYOC
hosts), and only the holding host for a template whose files live on one host."""

from __future__ import annotations

import uuid
from collections import Counter

import httpx
import pytest

from wrenn_server.controlplane.db.models.capsules import Template
from wrenn_server.controlplane.db.models.hosts import Host
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.errors import ServiceUnavailable
from wrenn_server.controlplane.hosts.scheduler import RoundRobinScheduler

from .helpers import signup


def _host(address: str, *, status: str = "online", team: uuid.UUID | None = None) -> Host:
    return Host(
        id=uuid.uuid4(),
        type="byoc" if team else "regular",
        team_id=team,
        address=address,
        status=status,
        last_heartbeat_at=utcnow(),
    )


async def test_round_robin_over_the_hosts_a_team_may_use(
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

    scheduler = RoundRobinScheduler()
    async with db.sessionmaker() as session:
        picks = Counter([(await scheduler.pick(session, mine, base)).address for _ in range(9)])
        assert picks == {"10.0.0.1:1": 3, "10.0.0.2:1": 3, "10.0.0.3:1": 3}
        for _ in range(4):
            assert (await scheduler.pick(session, mine, pinned)).id == b.id

    async with db.sessionmaker() as session, transaction(session, write=True):
        held = await session.get(Host, b.id)
        assert held is not None
        held.status = "unreachable"
    async with db.sessionmaker() as session:
        with pytest.raises(ServiceUnavailable, match="holding template 'snap-x'"):
            await scheduler.pick(session, mine, pinned)

    # Deleting the holding host deletes the template's row: its files went with it.
    async with db.sessionmaker() as session, transaction(session, write=True):
        held = await session.get(Host, b.id)
        await session.delete(held)
    async with db.sessionmaker() as session:
        assert await session.get(Template, "snap-x") is None
        assert await session.get(Template, "base-x") is not None
