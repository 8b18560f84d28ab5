"""Team quotas through the API, with the host agent faked at its RPC boundary: each limit refuses
with `quota_exceeded` naming it and leaves nothing behind (no row, no agent call); paused
capsules keep their slot but give back vCPUs and memory, which a resume takes again; concurrent
creates racing for the last slot let exactly one through; platform admins set a team's own
limits, which are enforced at once, and nobody else can."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import AuditLog, Host, Sandbox, Template
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.errors import QuotaExceeded
from wrenn_server.controlplane.jobs.reconciler import Reconciler
from wrenn_server.controlplane.services import audit, capsules, quotas
from wrenn_server.controlplane.services.capsules import Hosts

from ..fakeagent import FakeAgentServer, FakeHostAgent, FakeTemplate
from .fake_hosts import fake_agent, fake_hosts, fake_pool  # noqa: F401 (fixture)
from .helpers import assert_error, bearer, count, signup
from .team_helpers import add_member, login, switch

BASE = "base-q"


class Team:
    """An account's team and the headers of its owner."""

    def __init__(self, account: dict[str, Any]) -> None:
        self.account = account
        self.id = account["team_id"]
        self.headers = bearer(account["token"])


@pytest.fixture(autouse=True)
def _one_host_agent(app: FastAPI, fake_agent: FakeAgentServer) -> None:  # noqa: F811
    """The agent of the one host `_world` makes."""
    app.state.fake_agent = fake_agent


async def _world(
    app: FastAPI, client: httpx.AsyncClient, db: Database, limits: quotas.Limits
) -> tuple[Team, Team, FakeHostAgent]:
    """A platform admin (the first account) and a team owner, one big host behind a fake agent,
    and platform defaults `limits`."""
    admin = Team(await signup(client, email="root@example.com"))
    owner = Team(await signup(client, email="owner@example.com"))
    server: FakeAgentServer = app.state.fake_agent
    agent = server.agent
    agent.templates[BASE] = FakeTemplate(BASE, "image")
    app.state.hosts = fake_hosts(limits)
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(
            Host(
                id=ids.new_id(),
                type="regular",
                status="online",
                address=server.target,
                cpu_cores=64,
                memory_mb=1 << 20,
                last_heartbeat_at=utcnow(),
            )
        )
        session.add(Template(name=BASE, team_id=ids.PLATFORM_TEAM_ID, type="base"))
    return admin, owner, agent


def _limits(**changes: int) -> quotas.Limits:
    values = {"max_capsules": 10, "max_vcpus": 10, "max_memory_mb": 10_000, "max_disk_mb": 10_000}
    return quotas.Limits(**{**values, **changes})


async def _create(client: httpx.AsyncClient, team: Team, **body: Any) -> httpx.Response:
    return await client.post("/v1/capsules", json={"template": BASE, **body}, headers=team.headers)


async def _created(client: httpx.AsyncClient, team: Team, **body: Any) -> str:
    resp = await _create(client, team, **body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _refused(resp: httpx.Response, quota: str) -> dict[str, Any]:
    error = assert_error(resp, 403, "quota_exceeded")
    named = quota.removeprefix("max_").split("_")[0]
    assert error["quota"] == quota and named in error["message"].lower()
    return error


async def _rows(db: Database) -> list[Sandbox]:
    async with db.sessionmaker() as session:
        return list(await session.scalars(select(Sandbox).order_by(Sandbox.created_at)))


async def _status(db: Database, wire_id: str) -> str:
    async with db.sessionmaker() as session:
        sandbox = await session.get(Sandbox, ids.SANDBOX.parse(wire_id))
        assert sandbox is not None
        return sandbox.status


async def test_disk_and_capsule_count(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    _admin, owner, agent = await _world(app, client, db, _limits(max_capsules=2, max_disk_mb=2048))

    error = _refused(await _create(client, owner, disk_size_mb=4096), "max_disk_mb")
    assert (error["limit"], error["requested"]) == (2048, 4096)
    assert await _rows(db) == [] and agent.calls == []

    first = await _created(client, owner, disk_size_mb=2048)
    await _created(client, owner, disk_size_mb=1024)
    # A paused capsule keeps its slot (its disk and checkpoint stay on the host).
    paused = await client.post(f"/v1/capsules/{first}/pause", headers=owner.headers)
    assert paused.status_code == 200, paused.text
    calls = len(agent.calls)
    error = _refused(await _create(client, owner, disk_size_mb=1024), "max_capsules")
    assert (error["limit"], error["used"]) == (2, 2)
    assert "at most 2 capsules" in error["message"]
    assert len(await _rows(db)) == 2 and agent.calls[calls:] == []

    # A destroyed one frees it.
    gone = await client.delete(f"/v1/capsules/{first}", headers=owner.headers)
    assert gone.status_code == 204, gone.text
    await _created(client, owner, disk_size_mb=1024)


async def test_vcpus_and_memory_are_held_by_running_capsules_only(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    _admin, owner, agent = await _world(app, client, db, _limits(max_vcpus=3, max_memory_mb=3000))
    first = await _created(client, owner, vcpus=2, memory_mb=1000)

    error = _refused(await _create(client, owner, vcpus=2, memory_mb=1000), "max_vcpus")
    assert (error["limit"], error["used"], error["requested"]) == (3, 2, 2)
    _refused(await _create(client, owner, vcpus=1, memory_mb=2500), "max_memory_mb")
    assert len(await _rows(db)) == 1

    # Paused, it holds neither: a second one fits; resuming the first would go over, so it
    # stays paused and its agent is not asked.
    paused = await client.post(f"/v1/capsules/{first}/pause", headers=owner.headers)
    assert paused.status_code == 200, paused.text
    await _created(client, owner, vcpus=2, memory_mb=1000)
    calls = len(agent.calls)
    _refused(await client.post(f"/v1/capsules/{first}/resume", headers=owner.headers), "max_vcpus")
    assert await _status(db, first) == "paused" and agent.calls[calls:] == []

    # Within the limits again, the resume goes through.
    second = (await _rows(db))[1]
    gone = await client.delete(
        f"/v1/capsules/{ids.SANDBOX.format(second.id)}", headers=owner.headers
    )
    assert gone.status_code == 204, gone.text
    resumed = await client.post(f"/v1/capsules/{first}/resume", headers=owner.headers)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "running"


async def test_a_snapshot_counts_with_the_size_it_restores_to(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    _admin, owner, _agent = await _world(app, client, db, _limits(max_vcpus=2))
    team = ids.TEAM.parse(owner.id)
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(Template(name="big-snap", team_id=team, type="snapshot", vcpus=4))
    # The agent would restore it with its own 4 vCPUs, whatever the request says.
    _refused(await _create(client, owner, template="big-snap", vcpus=1), "max_vcpus")
    assert await _rows(db) == []


async def test_concurrent_creates_take_the_last_slot_once(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    _admin, owner, _agent = await _world(app, client, db, _limits(max_capsules=3))
    await _created(client, owner)
    await _created(client, owner)
    hosts: Hosts = app.state.hosts
    spec = capsules.CreateCapsule(BASE, vcpus=1, memory_mb=512, timeout_sec=0)
    team = ids.TEAM.parse(owner.id)
    # The service itself, so that the creates start together (requests are staggered by
    # their authentication), on connections opened beforehand (else the first one done
    # connecting commits before the others have connected).
    await asyncio.gather(*[_rows(db) for _ in range(6)])
    answers = await asyncio.gather(
        *[
            capsules.create_capsule(db, hosts, team_id=team, spec=spec, actor=audit.SYSTEM)
            for _ in range(6)
        ],
        return_exceptions=True,
    )
    refused = [a for a in answers if isinstance(a, QuotaExceeded)]
    assert len(refused) == 5, answers
    assert all(r.details["quota"] == "max_capsules" for r in refused)
    assert len(await _rows(db)) == 3


async def test_concurrent_resumes_and_creates_share_the_last_vcpus(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    _admin, owner, _agent = await _world(app, client, db, _limits(max_vcpus=2))
    paused = [await _created(client, owner) for _ in range(2)]
    for wire_id in paused:
        resp = await client.post(f"/v1/capsules/{wire_id}/pause", headers=owner.headers)
        assert resp.status_code == 200, resp.text
    await _created(client, owner)  # one of the two vCPUs
    answers = await asyncio.gather(
        *[client.post(f"/v1/capsules/{w}/resume", headers=owner.headers) for w in paused],
        _create(client, owner),
        _create(client, owner),
    )
    codes = sorted(r.status_code for r in answers)
    assert codes in ([200, 403, 403, 403], [201, 403, 403, 403]), [r.text for r in answers]
    held = [s for s in await _rows(db) if s.status in quotas.HOLDING]
    assert sum(s.vcpus for s in held) == 2 and all(s.status == "running" for s in held)


async def test_admins_set_a_teams_limits_and_members_read_them(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    admin, owner, _agent = await _world(app, client, db, _limits())
    member_account = await signup(client, email="member@example.com")
    await add_member(client, owner.account["token"], owner.id, member_account["email"])
    member_token = (await login(client, member_account["email"]))["token"]
    member = bearer(await switch(client, member_token, owner.id))
    path = f"/v1/admin/teams/{owner.id}/quotas"
    await _created(client, owner, vcpus=2, memory_mb=1024)

    # Neither the team's owner nor its member may change them; nothing is recorded.
    for headers in (owner.headers, member):
        resp = await client.put(path, json={"max_capsules": 100}, headers=headers)
        assert_error(resp, 403, "forbidden")
        assert_error(await client.get(path, headers=headers), 403, "forbidden")

    resp = await client.put(
        path, json={"max_capsules": 1, "max_memory_mb": 4096}, headers=admin.headers
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["limits"] == {
        "max_capsules": 1,
        "max_vcpus": 10,
        "max_memory_mb": 4096,
        "max_disk_mb": 10_000,
    }
    assert body["overrides"] == {
        "max_capsules": 1,
        "max_vcpus": None,
        "max_memory_mb": 4096,
        "max_disk_mb": None,
    }
    assert body["usage"] == {"capsules": 1, "vcpus": 2, "memory_mb": 1024}
    assert (await client.get(path, headers=admin.headers)).json() == body

    # Enforced at once, and readable by every member of the team (not by other teams).
    _refused(await _create(client, owner), "max_capsules")
    for headers in (owner.headers, member):
        mine = await client.get(f"/v1/teams/{owner.id}/quotas", headers=headers)
        assert mine.status_code == 200, mine.text
        assert mine.json() == body
    other = await client.get(f"/v1/teams/{owner.id}/quotas", headers=admin.headers)
    assert_error(other, 404, "not_found")
    listed = await client.get("/v1/admin/teams", headers=admin.headers)
    assert {t["id"]: t["quotas"] for t in listed.json()["teams"]}[owner.id] == body

    # Audited with the old and new values.
    async with db.sessionmaker() as session:
        events = list(
            await session.scalars(select(AuditLog).where(AuditLog.action == "set_quotas"))
        )
    assert len(events) == 1 and events[0].scope == "admin"
    assert events[0].metadata_["quotas"]["max_capsules"] == 1
    assert events[0].metadata_["previous"]["max_capsules"] is None

    # Back to the defaults: a field left out is reset.
    resp = await client.put(path, json={}, headers=admin.headers)
    assert resp.status_code == 200 and resp.json()["limits"]["max_capsules"] == 10
    await _created(client, owner)


@pytest.mark.parametrize(
    "body",
    [{"max_capsules": -1}, {"max_vcpus": "lots"}, {"max_memory_mb": 1 << 40}, {"max_cpus": 4}],
)
async def test_bad_limits_are_refused(
    app: FastAPI, client: httpx.AsyncClient, db: Database, body: dict[str, Any]
) -> None:
    admin, owner, _agent = await _world(app, client, db, _limits())
    resp = await client.put(f"/v1/admin/teams/{owner.id}/quotas", json=body, headers=admin.headers)
    assert_error(resp, 400, "invalid_request")
    missing = await client.put(
        f"/v1/admin/teams/{ids.TEAM.format(uuid.uuid4())}/quotas", json={}, headers=admin.headers
    )
    assert_error(missing, 404, "not_found")
    assert await count(db, AuditLog) == 0


@pytest.mark.parametrize(
    "body",
    [{"vcpus": 65}, {"memory_mb": 262145}, {"disk_size_mb": 262145}, {"disk_size_mb": 1}],
)
async def test_request_bounds_hold_before_any_quota(
    app: FastAPI, client: httpx.AsyncClient, db: Database, body: dict[str, Any]
) -> None:
    huge = quotas.Limits(1 << 20, 1 << 20, 1 << 30, 1 << 30)
    _admin, owner, agent = await _world(app, client, db, huge)
    assert_error(await _create(client, owner, **body), 400, "invalid_request")
    assert await _rows(db) == [] and agent.calls == []


async def test_the_platform_defaults_come_from_the_settings(
    client: httpx.AsyncClient, settings: Any
) -> None:
    team = Team(await signup(client))
    resp = await client.get(f"/v1/teams/{team.id}/quotas", headers=team.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["defaults"] == {
        "max_capsules": settings.quota_max_capsules,
        "max_vcpus": settings.quota_max_vcpus,
        "max_memory_mb": settings.quota_max_memory_mb,
        "max_disk_mb": settings.quota_max_disk_mb,
    }
    assert resp.json()["usage"] == {"capsules": 0, "vcpus": 0, "memory_mb": 0}


async def test_the_reconciler_leaves_a_resume_in_flight_alone(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    _admin, owner, agent = await _world(app, client, db, _limits())
    wire_id = await _created(client, owner)
    sandbox_id = ids.SANDBOX.parse(wire_id)
    # What a resume records before asking the agent, which still reports the capsule paused.
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(Sandbox)
            .where(Sandbox.id == sandbox_id)
            .values(status="starting", last_updated=utcnow() - dt.timedelta(seconds=1))
        )
    agent.sandboxes[wire_id].status = "paused"
    reconciler = Reconciler(db, fake_pool())
    await reconciler.run_once()
    assert await _status(db, wire_id) == "starting"
    # A resume that never finished (its control plane died): the agent's word wins.
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(Sandbox)
            .where(Sandbox.id == sandbox_id)
            .values(last_updated=utcnow() - dt.timedelta(minutes=5))
        )
    await reconciler.run_once()
    assert await _status(db, wire_id) == "paused"
