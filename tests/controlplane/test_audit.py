"""The audit log: who sees what in `GET /v1/audit-logs`, filters, cursor pagination, the events
that capsule, snapshot, API key and reconciler changes record, and fire-and-forget writes.

The host agent is outside the unit: the in-process fake agent (tests/fakeagent) stands in for it,
behind the real gRPC interface and the real client pool."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.agents.pool import HostClientPool
from wrenn_server.controlplane.agents.scheduler import BalancedScheduler
from wrenn_server.controlplane.db.models import (
    AuditLog,
    Host,
    Sandbox,
    Team,
    TeamMember,
    Template,
)
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.jobs.reconciler import Reconciler
from wrenn_server.controlplane.security import TokenCodec, UserClaims
from wrenn_server.controlplane.services import audit
from wrenn_server.controlplane.services import capsules as capsule_svc
from wrenn_server.controlplane.services import snapshots as snapshot_svc

from ..fakeagent import FakeAgentServer, FakeTemplate
from .helpers import assert_error, bearer, count, signup

USER = audit.Actor(type="user", id=f"usr-{uuid.uuid4()}", name="Ada")


SECRET = "audit-test-agent-secret"


@pytest.fixture
async def agents() -> AsyncIterator[tuple[FakeAgentServer, FakeAgentServer]]:
    """Two fake host agents; each test makes the host rows that point at them."""
    async with FakeAgentServer(SECRET) as one, FakeAgentServer(SECRET) as two:
        for server in (one, two):
            server.agent.templates["base-t"] = FakeTemplate("base-t", "image")
        yield one, two


def _hosts() -> capsule_svc.Hosts:
    return capsule_svc.Hosts(HostClientPool(lambda _host_id: SECRET), BalancedScheduler())


async def _add(db: Database, *rows: Any) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add_all(rows)


async def _event(
    db: Database,
    team_id: uuid.UUID,
    *,
    resource_type: str = "sandbox",
    action: str = "create",
    scope: audit.Scope = "team",
    created_at: dt.datetime | None = None,
) -> str:
    async with db.sessionmaker() as session, transaction(session, write=True):
        entry = await audit.record(
            session,
            actor=USER,
            team_id=team_id,
            resource_type=resource_type,
            resource_id=f"sb-{uuid.uuid4()}",
            action=action,
            scope=scope,
        )
        assert entry is not None
        if created_at is not None:
            entry.created_at = created_at
    return ids.AUDIT_LOG.format(entry.id)


async def _list(client: httpx.AsyncClient, token: str, **params: Any) -> dict[str, Any]:
    resp = await client.get("/v1/audit-logs", params=params, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _member_token(
    app: FastAPI, client: httpx.AsyncClient, db: Database, team: str, role: str
) -> str:
    """A token of a new user who is a `role` of `team` (memberships are inserted directly)."""
    user = await signup(client, name="Member")
    user_id, team_id = ids.USER.parse(user["user_id"]), ids.TEAM.parse(team)
    await _add(db, TeamMember(team_id=team_id, user_id=user_id, role=role))
    codec: TokenCodec = app.state.codec
    return codec.issue(UserClaims(user_id, team_id, role, False, "Member", "m@example.com"))


async def test_visibility_by_role_and_team(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    owner = await signup(client)
    outsider = await signup(client)
    team = ids.TEAM.parse(owner["team_id"])
    team_event = await _event(db, team, scope="team")
    admin_event = await _event(db, team, resource_type="team", action="rename", scope="admin")
    other_event = await _event(db, ids.TEAM.parse(outsider["team_id"]))

    everything = await _list(client, owner["token"])
    assert [e["id"] for e in everything["items"]] == [admin_event, team_event]
    assert everything["next_cursor"] is None
    item = everything["items"][1]
    assert set(item) == {
        "id",
        "team_id",
        "actor",
        "resource_type",
        "resource_id",
        "action",
        "scope",
        "status",
        "metadata",
        "created_at",
    }
    assert item["team_id"] == owner["team_id"]
    assert item["actor"] == {"type": "user", "id": USER.id, "name": "Ada"}
    assert (item["scope"], item["status"], item["metadata"]) == ("team", "success", {})

    member = await _member_token(app, client, db, owner["team_id"], "member")
    assert [e["id"] for e in (await _list(client, member))["items"]] == [team_event]
    admin = await _member_token(app, client, db, owner["team_id"], "admin")
    assert [e["id"] for e in (await _list(client, admin))["items"]] == [admin_event, team_event]
    assert [e["id"] for e in (await _list(client, outsider["token"]))["items"]] == [other_event]


async def test_api_keys_are_refused_and_key_events_carry_the_name(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client)
    created = await client.post(
        "/v1/api-keys", json={"name": "deploy bot"}, headers=bearer(owner["token"])
    )
    key = created.json()
    resp = await client.get("/v1/audit-logs", headers={"X-API-Key": key["key"]})
    assert_error(resp, 401, "unauthorized")
    assert_error(await client.get("/v1/audit-logs"), 401, "unauthorized")
    revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=bearer(owner["token"]))
    assert revoked.status_code == 204

    events = (await _list(client, owner["token"], resource_type="api_key"))["items"]
    assert [(e["action"], e["resource_id"]) for e in events] == [
        ("revoke", key["id"]),
        ("create", key["id"]),
    ]
    assert all(e["metadata"]["name"] == "deploy bot" for e in events)
    assert all(e["actor"]["id"] == owner["user_id"] for e in events)


async def test_multi_value_filters(client: httpx.AsyncClient, db: Database) -> None:
    owner = await signup(client)
    team = ids.TEAM.parse(owner["team_id"])
    made = {
        (rt, action): await _event(db, team, resource_type=rt, action=action)
        for rt, action in [
            ("sandbox", "create"),
            ("sandbox", "pause"),
            ("snapshot", "create"),
            ("api_key", "revoke"),
        ]
    }

    async def seen(query: str) -> set[tuple[str, str]]:
        resp = await client.get(f"/v1/audit-logs?{query}", headers=bearer(owner["token"]))
        assert resp.status_code == 200, resp.text
        return {(e["resource_type"], e["action"]) for e in resp.json()["items"]}

    both = {("sandbox", "create"), ("sandbox", "pause"), ("snapshot", "create")}
    assert await seen("resource_type=sandbox,snapshot") == both
    assert await seen("resource_type=sandbox&resource_type=snapshot") == both
    assert await seen("resource_type=sandbox, snapshot,&resource_type=sandbox") == both
    assert await seen("action=create&action=revoke") == {
        ("sandbox", "create"),
        ("snapshot", "create"),
        ("api_key", "revoke"),
    }
    assert await seen("resource_type=sandbox&action=pause,revoke") == {("sandbox", "pause")}
    assert await seen("resource_type=host") == set()
    assert await seen("") == set(made)


async def test_pagination_is_stable_while_events_are_added(
    client: httpx.AsyncClient, db: Database
) -> None:
    owner = await signup(client)
    team = ids.TEAM.parse(owner["team_id"])
    # Ties on created_at are broken by id: half the events share one timestamp.
    tied = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    for i in range(23):
        await _event(db, team, created_at=tied if i % 2 else None)
    expected = [e["id"] for e in (await _list(client, owner["token"], limit=200))["items"]]
    assert len(expected) == 23

    walked: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = await _list(client, owner["token"], **params)
        walked += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        # Events recorded between pages (newer than every cursor) shift nothing.
        await _event(db, team)
        await _event(db, team, resource_type="snapshot")
        if cursor is None:
            break
    assert walked == expected
    assert len(walked) == len(set(walked))


async def test_limit_default_max_and_bad_input(client: httpx.AsyncClient, db: Database) -> None:
    owner = await signup(client)
    team = ids.TEAM.parse(owner["team_id"])
    async with db.sessionmaker() as session, transaction(session, write=True):
        for _ in range(205):
            await audit.record(
                session, actor=USER, team_id=team, resource_type="sandbox", resource_id=None,
                action="create",
            )  # fmt: skip
    default = await _list(client, owner["token"])
    assert len(default["items"]) == 50 and default["next_cursor"]
    capped = await _list(client, owner["token"], limit=1000)
    assert len(capped["items"]) == 200 and capped["next_cursor"]
    rest = await _list(client, owner["token"], limit=200, cursor=capped["next_cursor"])
    assert len(rest["items"]) == 5 and rest["next_cursor"] is None
    for bad in ({"limit": 0}, {"limit": "x"}, {"cursor": "not-a-cursor"}, {"cursor": "e30"}):
        resp = await client.get("/v1/audit-logs", params=bad, headers=bearer(owner["token"]))
        assert_error(resp, 400, "invalid_request")


async def test_failing_audit_write_does_not_fail_the_request(
    client: httpx.AsyncClient,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = await signup(client)

    def broken(**kw: Any) -> AuditLog:
        # A row the database refuses (CHECK on scope): the insert itself fails.
        return AuditLog(**{**kw, "scope": "nowhere"})

    monkeypatch.setattr(audit, "AuditLog", broken)
    with caplog.at_level(logging.ERROR, logger=audit.log.name):
        resp = await client.post(
            "/v1/api-keys", json={"name": "still made"}, headers=bearer(owner["token"])
        )
    assert resp.status_code == 201, resp.text
    assert "audit write failed" in caplog.text
    monkeypatch.undo()
    keys = (await client.get("/v1/api-keys", headers=bearer(owner["token"]))).json()
    assert [k["name"] for k in keys] == ["still made"]
    assert await count(db, AuditLog) == 0


async def test_record_keeps_the_callers_transaction(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The savepoint rolls back the audit row only: the caller's writes before and after it
    commit."""
    team = await _team(db)
    monkeypatch.setattr(audit, "AuditLog", lambda **kw: AuditLog(**{**kw, "status": "bogus"}))
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(Template(name="before", team_id=team, type="snapshot"))
        entry = await audit.record(
            session, actor=audit.SYSTEM, team_id=team, resource_type="x", resource_id=None,
            action="y",
        )  # fmt: skip
        assert entry is None
        session.add(Template(name="after", team_id=team, type="snapshot"))
    assert await count(db, Template) >= 2
    assert await count(db, AuditLog) == 0
    assert "audit write failed" in caplog.text


async def _team(db: Database) -> uuid.UUID:
    team = Team(id=ids.new_id(), name="t", slug=ids.new_team_slug())
    await _add(db, team)
    return team.id


async def _host(db: Database, address: str) -> uuid.UUID:
    host = Host(
        id=ids.new_id(),
        type="regular",
        status="online",
        address=address,
        last_heartbeat_at=utcnow(),
    )
    await _add(db, host)
    return host.id


async def _events(db: Database) -> list[AuditLog]:
    async with db.sessionmaker() as session:
        query = select(AuditLog).order_by(AuditLog.created_at, AuditLog.id)
        return list(await session.scalars(query))


async def test_capsule_and_snapshot_events(
    db: Database, agents: tuple[FakeAgentServer, FakeAgentServer]
) -> None:
    team = await _team(db)
    server = agents[0]
    await _host(db, server.target)
    await _add(db, Template(name="base-t", team_id=team, type="base", vcpus=1, memory_mb=256))
    hosts = _hosts()
    key = audit.Actor(type="api_key", id=f"key-{uuid.uuid4()}", name="ci runner")

    spec = capsule_svc.CreateCapsule("base-t", vcpus=1, memory_mb=256, timeout_sec=0)
    made = await capsule_svc.create_capsule(db, hosts, team_id=team, spec=spec, actor=key)
    wire = ids.SANDBOX.format(made.id)
    await capsule_svc.pause_capsule(db, hosts, team, wire, actor=USER)
    await capsule_svc.resume_capsule(db, hosts, team, wire, actor=USER)
    snap = await snapshot_svc.create_snapshot(
        db, hosts, team_id=team, wire_id=wire, name="snap", overwrite=False, actor=key
    )
    snapshot_size = server.agent.templates[snap.storage_name].size_bytes
    await snapshot_svc.delete_snapshot(
        db, hosts, team_id=team, name="snap", is_admin=False, actor=USER
    )
    await capsule_svc.destroy_capsule(db, hosts, team, wire, actor=USER)
    # Destroying a stopped capsule is a no-op: nothing new is recorded, the agent is not asked.
    await capsule_svc.destroy_capsule(db, hosts, team, wire, actor=USER)
    assert [c for c in server.agent.calls if c != "GetSandboxMetrics"] == [
        "CreateSandbox",
        "PauseSandbox",
        "ResumeSandbox",
        "CreateSnapshot",
        "DeleteSnapshot",
        "DestroySandbox",
    ]
    assert server.agent.sandboxes == {} and "snap" not in server.agent.templates

    events = await _events(db)
    assert [(e.resource_type, e.resource_id, e.action) for e in events] == [
        ("sandbox", wire, "create"),
        ("sandbox", wire, "pause"),
        ("sandbox", wire, "resume"),
        ("snapshot", "snap", "create"),
        ("snapshot", "snap", "delete"),
        ("sandbox", wire, "destroy"),
    ]
    assert all(e.team_id == team and e.scope == "team" for e in events)
    assert all(e.status == "success" for e in events)
    assert (events[0].actor_type, events[0].actor_id, events[0].actor_name) == (
        "api_key",
        key.id,
        "ci runner",
    )
    assert events[0].metadata_["template"] == "base-t"
    assert events[3].actor_name == "ci runner"
    assert events[3].metadata_["size_bytes"] == snapshot_size
    assert events[1].actor_id == USER.id


async def test_failed_capsule_operation_records_nothing(
    db: Database, agents: tuple[FakeAgentServer, FakeAgentServer]
) -> None:
    team = await _team(db)
    host = await _host(db, agents[0].target)
    hosts = _hosts()
    sandbox = Sandbox(
        id=ids.new_id(),
        team_id=team,
        host_id=host,
        template="t",
        status="paused",
        vcpus=1,
        memory_mb=1,
    )
    await _add(db, sandbox)
    with pytest.raises(Exception, match="not running"):
        await capsule_svc.pause_capsule(db, hosts, team, ids.SANDBOX.format(sandbox.id), actor=USER)
    assert await count(db, AuditLog) == 0
    assert agents[0].agent.calls == []


async def test_reconciler_records_system_events(
    db: Database, agents: tuple[FakeAgentServer, FakeAgentServer]
) -> None:
    team = await _team(db)
    up_agent, down_agent = agents
    up, down = await _host(db, up_agent.target), await _host(db, down_agent.target)

    def capsule(host_id: uuid.UUID, status: str = "running") -> Sandbox:
        return Sandbox(
            id=ids.new_id(),
            team_id=team,
            host_id=host_id,
            template="t",
            status=status,
            vcpus=1,
            memory_mb=1,
        )

    paused, gone, unchanged, lost = capsule(up), capsule(up), capsule(up), capsule(down)
    await _add(db, paused, gone, unchanged, lost)
    # The agent paused one on its own, lost another; the second host cannot be reached.
    up_agent.agent.adopt(ids.SANDBOX.format(paused.id), status="paused").auto_paused = True
    up_agent.agent.adopt(ids.SANDBOX.format(unchanged.id))
    await down_agent.stop()
    pool = HostClientPool(lambda _host_id: SECRET)
    reconciler = Reconciler(db, pool)
    await reconciler.run_once()
    await reconciler.run_once()  # idempotent: nothing changes, nothing more is recorded

    events = {e.resource_id: e for e in await _events(db)}
    assert len(events) == 3
    expected = {
        paused.id: ("auto_pause", "info"),
        gone.id: ("stopped", "warning"),
        lost.id: ("marked_missing", "warning"),
    }
    for sandbox_id, (action, status) in expected.items():
        event = events[ids.SANDBOX.format(sandbox_id)]
        assert (event.action, event.status, event.scope) == (action, status, "team")
        assert (event.actor_type, event.actor_id, event.actor_name) == ("system", None, "system")
        assert event.team_id == team and event.resource_type == "sandbox"
        assert event.metadata_["from"] == "running"
    async with db.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(AuditLog))
    assert total == 3


async def test_capsule_routes_record_the_calling_principal(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: Database,
    agents: tuple[FakeAgentServer, FakeAgentServer],
) -> None:
    owner = await signup(client)
    team = ids.TEAM.parse(owner["team_id"])
    await _host(db, agents[0].target)
    await _add(db, Template(name="base-t", team_id=team, type="base", vcpus=1, memory_mb=256))
    app.state.hosts = _hosts()
    key = (
        await client.post("/v1/api-keys", json={"name": "agent"}, headers=bearer(owner["token"]))
    ).json()
    as_key = {"X-API-Key": key["key"]}

    made = await client.post("/v1/capsules", json={"template": "base-t"}, headers=as_key)
    assert made.status_code == 201, made.text
    capsule = made.json()["id"]
    paused = await client.post(f"/v1/capsules/{capsule}/pause", headers=bearer(owner["token"]))
    assert paused.status_code == 200, paused.text

    events = (await _list(client, owner["token"], resource_type="sandbox"))["items"]
    assert [(e["action"], e["resource_id"]) for e in events] == [
        ("pause", capsule),
        ("create", capsule),
    ]
    assert events[1]["actor"] == {"type": "api_key", "id": key["id"], "name": "agent"}
    assert events[0]["actor"]["id"] == owner["user_id"]
