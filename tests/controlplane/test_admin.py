"""Platform administration under `/v1/admin`: who may call it (a platform admin, re-checked in
the database on every request), teams and BYOC, templates (listing every team's, deleting any
but the base template), capsules and users across teams; and `wrenn admin create-user`.

The first account of an installation is a platform admin; later signups are not."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from fastapi import FastAPI
from sqlalchemy import select, update
from typer.testing import CliRunner

from wrenn_server.cli import app as cli_app
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models import (
    AuditLog,
    Host,
    Sandbox,
    Team,
    TeamQuota,
    Template,
    User,
    UserToken,
)
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.security import TokenCodec, UserClaims
from wrenn_server.controlplane.settings import Settings

from ..fakeagent import FakeAgentServer, FakeTemplate
from .conftest import TEST_JWT_SECRET
from .fake_hosts import SECRET, fake_hosts
from .helpers import PASSWORD, assert_error, bearer, signup
from .team_helpers import add_member, login, switch

BASE = "minimal"  # Settings.base_template


async def _add(db: Database, *rows: Any) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add_all(rows)


async def _template_names(db: Database) -> set[str]:
    async with db.sessionmaker() as session:
        return set(await session.scalars(select(Template.name)))


async def _set_admin(db: Database, user_id: str, value: bool) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(User).where(User.id == ids.USER.parse(user_id)).values(is_admin=value)
        )


async def _admin_events(db: Database) -> list[AuditLog]:
    async with db.sessionmaker() as session:
        query = select(AuditLog).where(AuditLog.scope == "admin").order_by(AuditLog.created_at)
        return list(await session.scalars(query))


async def _world(client: httpx.AsyncClient, db: Database) -> dict[str, Any]:
    """An admin (the first account), a team owner with a member, a snapshot of the owner's team
    and the platform's base template."""
    admin = await signup(client, email="root@example.com", name="Root")
    owner = await signup(client, email="owner@example.com", name="Olive")
    member = await signup(client, email="member@example.com", name="Mel")
    await add_member(client, owner["token"], owner["team_id"], member["email"])
    member_token = (await login(client, member["email"]))["token"]
    team = ids.TEAM.parse(owner["team_id"])
    await _add(
        db,
        Template(name=BASE, team_id=ids.PLATFORM_TEAM_ID, type="base"),
        Template(name="olive-snap", team_id=team, type="snapshot", vcpus=2, memory_mb=1024),
    )
    key = await client.post("/v1/api-keys", json={"name": "ci"}, headers=bearer(owner["token"]))
    assert key.status_code == 201, key.text
    return {
        "admin": admin,
        "owner": owner,
        "member": member,
        "member_token": member_token,
        "api_key": key.json()["key"],
    }


# (method, path, json body, status for an admin)
ROUTES: list[tuple[str, str, dict[str, Any] | None, int]] = [
    ("GET", "/v1/admin/teams", None, 200),
    ("PUT", "/v1/admin/teams/{team}/byoc", {"enabled": True}, 204),
    ("GET", "/v1/admin/teams/{team}/quotas", None, 200),
    ("PUT", "/v1/admin/teams/{team}/quotas", {"max_capsules": 3}, 200),
    ("GET", "/v1/admin/templates", None, 200),
    ("GET", "/v1/admin/capsules", None, 200),
    ("GET", "/v1/admin/users", None, 200),
    # Last: it deletes the template.
    ("DELETE", "/v1/admin/templates/olive-snap", None, 204),
]


async def _call(
    client: httpx.AsyncClient,
    route: tuple[str, str, dict[str, Any] | None, int],
    team: str,
    headers: dict[str, str],
) -> httpx.Response:
    method, path, body, _ = route
    return await client.request(method, path.format(team=team), json=body, headers=headers)


async def test_only_platform_admins_pass(
    client: httpx.AsyncClient, db: Database, app: FastAPI
) -> None:
    world = await _world(client, db)
    team = world["owner"]["team_id"]
    owner = world["owner"]
    codec: TokenCodec = app.state.codec
    # A token whose is_admin claim lies: the database says no.
    forged = codec.issue(
        UserClaims(
            user_id=ids.USER.parse(owner["user_id"]),
            team_id=ids.TEAM.parse(team),
            role="owner",
            is_admin=True,
            name=owner["name"],
            email=owner["email"],
        )
    )
    # An admin demoted after their token was issued.
    demoted = await signup(client, email="former@example.com")
    await _set_admin(db, demoted["user_id"], True)
    demoted_token = (await login(client, demoted["email"]))["token"]
    await _set_admin(db, demoted["user_id"], False)

    refusals = [
        (bearer(owner["token"]), 403, "forbidden"),
        (bearer(world["member_token"]), 403, "forbidden"),
        (bearer(forged), 403, "forbidden"),
        (bearer(demoted_token), 403, "forbidden"),
        ({"X-API-Key": world["api_key"]}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {world['api_key']}"}, 401, "unauthorized"),
        ({}, 401, "unauthorized"),
    ]
    for route in ROUTES:
        for headers, status, code in refusals:
            resp = await _call(client, route, team, headers)
            assert resp.status_code == status, (route, headers, resp.text)
            assert_error(resp, status, code)
    # Nothing was changed by the refused calls.
    assert "olive-snap" in await _template_names(db)
    async with db.sessionmaker() as session:
        assert (await session.get(Team, ids.TEAM.parse(team))).is_byoc is False  # type: ignore[union-attr]
        assert await session.get(TeamQuota, ids.TEAM.parse(team)) is None

    for route in ROUTES:
        resp = await _call(client, route, team, bearer(world["admin"]["token"]))
        assert resp.status_code == route[3], (route, resp.text)

    # Granting is_admin in the database takes effect at once, with the old token.
    await _set_admin(db, owner["user_id"], True)
    resp = await client.get("/v1/admin/users", headers=bearer(owner["token"]))
    assert resp.status_code == 200, resp.text
    # And revoking it too, for the first admin.
    await _set_admin(db, world["admin"]["user_id"], False)
    resp = await client.get("/v1/admin/teams", headers=bearer(world["admin"]["token"]))
    assert_error(resp, 403, "forbidden")


async def test_teams_list_and_byoc(client: httpx.AsyncClient, db: Database) -> None:
    world = await _world(client, db)
    admin_h = bearer(world["admin"]["token"])
    owner = world["owner"]
    gone = await client.post("/v1/teams", json={"name": "Doomed"}, headers=bearer(owner["token"]))
    gone_id = gone.json()["id"]
    in_gone = await switch(client, owner["token"], gone_id)
    resp = await client.delete(f"/v1/teams/{gone_id}", headers=bearer(in_gone))
    assert resp.status_code == 204, resp.text

    resp = await client.get("/v1/admin/teams", headers=admin_h)
    assert resp.status_code == 200, resp.text
    page = resp.json()
    assert {k: page[k] for k in ("total", "page", "per_page", "total_pages")} == {
        "total": 4,
        "page": 1,
        "per_page": 100,
        "total_pages": 1,
    }
    # Each account's default team and, listed last, the deleted team; never the platform team.
    listed = [t["id"] for t in page["teams"]]
    assert listed[-1] == gone_id and page["teams"][-1]["deleted_at"] is not None
    teams = {t["id"]: t for t in page["teams"]}
    assert set(teams) == {gone_id} | {world[k]["team_id"] for k in ("admin", "owner", "member")}
    assert ids.TEAM.format(ids.PLATFORM_TEAM_ID) not in teams
    olive = teams[owner["team_id"]]
    assert olive["member_count"] == 2
    assert olive["is_byoc"] is False
    assert olive["name"] == "Olive's Team" and len(olive["slug"]) == 13
    assert (olive["owner_name"], olive["owner_email"]) == ("Olive", "owner@example.com")
    assert olive["deleted_at"] is None and olive["active_sandbox_count"] == 0
    assert teams[world["admin"]["team_id"]]["member_count"] == 1

    path = f"/v1/admin/teams/{owner['team_id']}/byoc"
    resp = await client.put(path, json={"enabled": True}, headers=admin_h)
    assert resp.status_code == 204, resp.text
    detail = await client.get(f"/v1/teams/{owner['team_id']}", headers=bearer(owner["token"]))
    assert detail.json()["team"]["is_byoc"] is True
    listed = await client.get("/v1/teams", headers=bearer(owner["token"]))
    assert [t["is_byoc"] for t in listed.json() if t["id"] == owner["team_id"]] == [True]
    resp = await client.get("/v1/admin/teams", headers=admin_h)
    assert {t["id"]: t["is_byoc"] for t in resp.json()["teams"]}[owner["team_id"]] is True

    resp = await client.put(path, json={"enabled": False}, headers=admin_h)
    assert resp.status_code == 204, resp.text
    detail = await client.get(f"/v1/teams/{owner['team_id']}", headers=bearer(owner["token"]))
    assert detail.json()["team"]["is_byoc"] is False

    events = [e for e in await _admin_events(db) if e.resource_type == "team"]
    assert [(e.action, e.metadata_["enabled"], e.metadata_["previous"]) for e in events] == [
        ("set_byoc", True, False),
        ("set_byoc", False, True),
    ]
    assert all(e.team_id == ids.TEAM.parse(owner["team_id"]) for e in events)
    assert all(e.actor_id == world["admin"]["user_id"] for e in events)
    assert all(e.resource_id == owner["team_id"] for e in events)

    # Bad input.
    for body in ({}, {"enabled": "yes"}, {"enabled": 1}, {"enabled": None}):
        assert_error(await client.put(path, json=body, headers=admin_h), 400, "invalid_request")
    resp = await client.put(path, content=b"not json", headers=admin_h)
    assert_error(resp, 400, "invalid_request")
    for bad in ("nope", "team-123", f"usr-{uuid.uuid4()}"):
        resp = await client.put(
            f"/v1/admin/teams/{bad}/byoc", json={"enabled": True}, headers=admin_h
        )
        assert_error(resp, 400, "invalid_request")
    # Teams that are not there: unknown, deleted, the platform's.
    for missing in (f"team-{uuid.uuid4()}", gone_id, ids.TEAM.format(ids.PLATFORM_TEAM_ID)):
        resp = await client.put(
            f"/v1/admin/teams/{missing}/byoc", json={"enabled": True}, headers=admin_h
        )
        assert_error(resp, 404, "not_found")
    assert len([e for e in await _admin_events(db) if e.resource_type == "team"]) == 2


async def test_templates_list(client: httpx.AsyncClient, db: Database) -> None:
    world = await _world(client, db)
    admin_h = bearer(world["admin"]["token"])
    other = ids.TEAM.parse(world["member"]["team_id"])
    await _add(db, Template(name="mel-snap", team_id=other, type="snapshot"))

    resp = await client.get("/v1/admin/templates", headers=admin_h)
    assert resp.status_code == 200, resp.text
    by_name = {t["name"]: t for t in resp.json()}
    assert set(by_name) == {BASE, "olive-snap", "mel-snap"}
    assert (by_name[BASE]["platform"], by_name[BASE]["protected"]) == (True, True)
    assert by_name[BASE]["team_id"] == ids.TEAM.format(ids.PLATFORM_TEAM_ID)
    assert by_name["olive-snap"] == {
        **by_name["olive-snap"],
        "team_id": world["owner"]["team_id"],
        "platform": False,
        "protected": False,
        "type": "snapshot",
        "vcpus": 2,
        "memory_mb": 1024,
    }
    assert by_name["mel-snap"]["team_id"] == world["member"]["team_id"]
    # A team only sees its own and the platform's.
    resp = await client.get("/v1/snapshots", headers=bearer(world["owner"]["token"]))
    assert {t["name"] for t in resp.json()} == {BASE, "olive-snap"}

    resp = await client.get(
        "/v1/admin/templates", params={"team_id": world["member"]["team_id"]}, headers=admin_h
    )
    assert [t["name"] for t in resp.json()] == ["mel-snap"]
    resp = await client.get("/v1/admin/templates", params={"team_id": "x"}, headers=admin_h)
    assert_error(resp, 400, "invalid_request")


async def test_template_delete_without_hosts(client: httpx.AsyncClient, db: Database) -> None:
    world = await _world(client, db)
    admin_h = bearer(world["admin"]["token"])
    await _add(db, Template(name="extra-base", team_id=ids.PLATFORM_TEAM_ID, type="base"))
    async with db.sessionmaker() as session:
        assert not list(await session.scalars(select(Host).where(Host.status == "online")))

    # Another team's snapshot: the admin need not be a member.
    resp = await client.delete("/v1/admin/templates/olive-snap", headers=admin_h)
    assert resp.status_code == 204, resp.text
    # A platform template other than the base one.
    resp = await client.delete("/v1/admin/templates/extra-base", headers=admin_h)
    assert resp.status_code == 204, resp.text
    assert await _template_names(db) == {BASE}

    # The base template stays: capsules are created from it.
    assert_error(
        await client.delete(f"/v1/admin/templates/{BASE}", headers=admin_h), 409, "conflict"
    )
    # Not through the team route either, even for a platform admin.
    resp = await client.delete(f"/v1/snapshots/{BASE}", headers=admin_h)
    assert_error(resp, 409, "conflict")
    assert await _template_names(db) == {BASE}

    resp = await client.delete("/v1/admin/templates/olive-snap", headers=admin_h)
    assert_error(resp, 404, "not_found")
    for bad in ("-dash-first", "a" * 200, "with space"):
        resp = await client.delete(f"/v1/admin/templates/{bad}", headers=admin_h)
        assert_error(resp, 400, "invalid_request")

    events = [e for e in await _admin_events(db) if e.resource_type == "snapshot"]
    assert [(e.resource_id, e.action, e.team_id, e.metadata_) for e in events] == [
        ("olive-snap", "delete", ids.TEAM.parse(world["owner"]["team_id"]), {"platform": False}),
        ("extra-base", "delete", ids.PLATFORM_TEAM_ID, {"platform": True}),
    ]
    assert all(e.actor_id == world["admin"]["user_id"] for e in events)


async def test_template_delete_asks_online_hosts_first(
    client: httpx.AsyncClient, db: Database, app: FastAPI
) -> None:
    world = await _world(client, db)
    admin_h = bearer(world["admin"]["token"])
    async with FakeAgentServer(SECRET) as online, FakeAgentServer(SECRET) as offline:
        await _add(
            db,
            Host(type="regular", address=online.target, status="online"),
            Host(type="regular", address=offline.target, status="offline"),
        )
        for server in (online, offline):
            for name in ("olive-snap", "kept"):
                server.agent.templates[name] = FakeTemplate(name, "snapshot")
        app.state.hosts = fake_hosts()
        await _delete_templates(client, db, admin_h, online, offline)


async def _delete_templates(
    client: httpx.AsyncClient,
    db: Database,
    admin_h: dict[str, str],
    online: FakeAgentServer,
    offline: FakeAgentServer,
) -> None:
    agent, down = online.agent, offline.agent

    resp = await client.delete("/v1/admin/templates/olive-snap", headers=admin_h)
    assert resp.status_code == 204, resp.text
    assert agent.calls == ["DeleteSnapshot"]
    assert down.calls == []  # offline hosts are not asked
    assert "olive-snap" not in await _template_names(db)
    assert "olive-snap" not in agent.templates and "olive-snap" in down.templates

    # A host that cannot delete the files: the record stays.
    await _add(db, Template(name="kept", team_id=ids.PLATFORM_TEAM_ID, type="snapshot"))
    agent.faults.unavailable = True
    resp = await client.delete("/v1/admin/templates/kept", headers=admin_h)
    assert_error(resp, 503, "host_unavailable")
    assert "kept" in await _template_names(db)


async def test_capsules_across_teams(client: httpx.AsyncClient, db: Database) -> None:
    world = await _world(client, db)
    admin_h = bearer(world["admin"]["token"])
    olive = ids.TEAM.parse(world["owner"]["team_id"])
    mel = ids.TEAM.parse(world["member"]["team_id"])
    a = Sandbox(team_id=olive, template=BASE, status="running", vcpus=1, memory_mb=512)
    b = Sandbox(team_id=mel, template=BASE, status="paused", vcpus=2, memory_mb=256)
    await _add(db, a, b)

    resp = await client.get("/v1/admin/capsules", headers=admin_h)
    assert resp.status_code == 200, resp.text
    got = {c["id"]: c for c in resp.json()}
    assert set(got) == {ids.SANDBOX.format(a.id), ids.SANDBOX.format(b.id)}
    assert got[ids.SANDBOX.format(a.id)]["team_id"] == world["owner"]["team_id"]
    assert got[ids.SANDBOX.format(a.id)]["status"] == "running"
    assert got[ids.SANDBOX.format(b.id)]["team_id"] == world["member"]["team_id"]
    assert got[ids.SANDBOX.format(b.id)]["host_id"] is None

    resp = await client.get(
        "/v1/admin/capsules", params={"team_id": world["member"]["team_id"]}, headers=admin_h
    )
    assert [c["id"] for c in resp.json()] == [ids.SANDBOX.format(b.id)]
    resp = await client.get("/v1/admin/capsules", params={"team_id": "team-1"}, headers=admin_h)
    assert_error(resp, 400, "invalid_request")


async def test_users_list(client: httpx.AsyncClient, db: Database) -> None:
    world = await _world(client, db)
    resp = await client.get("/v1/admin/users", headers=bearer(world["admin"]["token"]))
    assert resp.status_code == 200, resp.text
    assert {k: v for k, v in resp.json().items() if k != "users"} == {
        "total": 3,
        "page": 1,
        "per_page": 100,
        "total_pages": 1,
    }
    users = resp.json()["users"]
    # Newest first, as the Go system lists them.
    assert [u["email"] for u in users] == [
        "member@example.com",
        "owner@example.com",
        "root@example.com",
    ]
    assert set(users[0]) == {
        "user_id",
        "id",
        "name",
        "email",
        "is_admin",
        "is_active",
        "status",
        "email_verified",
        "created_at",
        "teams_joined",
        "teams_owned",
    }
    assert [(u["name"], u["is_admin"], u["status"]) for u in users] == [
        ("Mel", False, "active"),
        ("Olive", False, "active"),
        ("Root", True, "active"),
    ]
    # Mel is in her own team and Olive's; Olive owns hers.
    assert [(u["teams_joined"], u["teams_owned"]) for u in users] == [(2, 1), (1, 1), (1, 1)]
    assert users[1]["user_id"] == users[1]["id"] == world["owner"]["user_id"]
    assert all("password" not in key for u in users for key in u)
    assert PASSWORD not in resp.text and "argon2" not in resp.text


# --- wrenn admin create-user ------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A data dir for the CLI, and no database URL from the environment: the SQLite file."""
    monkeypatch.delenv("WRENN_DATABASE_URL", raising=False)
    monkeypatch.delenv("WRENN_DATA_DIR", raising=False)
    return tmp_path / "data"


async def _login(data_dir: Path, email: str, password: str) -> tuple[int, int | None]:
    """Log in through an app on the CLI's database: (login status, status of an admin route
    with the token)."""
    settings = Settings(
        data_dir=data_dir,
        jwt_secret=TEST_JWT_SECRET,  # type: ignore[arg-type]
        migrate_on_start=False,
    )
    db = Database(settings.effective_database_url)
    transport = httpx.ASGITransport(app=create_app(settings, db=db), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as client:
            resp = await client.post("/v1/auth/login", json={"email": email, "password": password})
            if resp.status_code != 200:
                return resp.status_code, None
            assert resp.json()["team_id"].startswith("team-")
            admin = await client.get("/v1/admin/users", headers=bearer(resp.json()["token"]))
            return resp.status_code, admin.status_code
    finally:
        await db.dispose()


async def test_cli_create_user(cli_env: Path) -> None:
    runner = CliRunner()
    args = ["admin", "create-user", "--data-dir", str(cli_env)]

    async def invoke(*extra: str) -> Result:
        # In a thread: the command runs its own event loop.
        return await asyncio.to_thread(runner.invoke, cli_app, [*args, *extra])

    result = await invoke("--email", "Boss@Example.com", "--name", "Boss", "--admin")
    assert result.exit_code == 0, result.output
    assert "password: " in result.output
    password = result.output.split("password: ", 1)[1].split()[0]
    assert (cli_env / "wrenn.db").is_file()

    result = await invoke(
        "--email", "dev@example.com", "--name", "Dev", "--password", "s3cret-enough"
    )
    assert result.exit_code == 0, result.output
    assert "password:" not in result.output

    assert await _login(cli_env, "boss@example.com", password) == (200, 200)
    assert await _login(cli_env, "dev@example.com", "s3cret-enough") == (200, 403)
    assert await _login(cli_env, "boss@example.com", "wrong password") == (401, None)

    # Refused: a taken email, a short password, a malformed email; nothing is created.
    result = await invoke("--email", "dev@example.com", "--name", "Again")
    assert result.exit_code == 1
    assert "already registered" in result.output
    result = await invoke("--email", "x@example.com", "--name", "X", "--password", "short")
    assert result.exit_code == 2
    result = await invoke("--email", "not-an-email", "--name", "X")
    assert result.exit_code == 2
    assert await _login(cli_env, "x@example.com", "short") == (401, None)


async def test_users_and_teams_are_listed_by_pages(client: httpx.AsyncClient, db: Database) -> None:
    """100 a page as the Go system's `?page`, with the totals; a page past the end is empty."""
    admin = await signup(client, email="root@example.com", name="Root")
    admin_h = bearer(admin["token"])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    await _add(
        db,
        *(
            User(
                email=f"u{n:03}@example.com",
                name=f"U{n}",
                is_active=True,
                created_at=start + dt.timedelta(minutes=n),
            )
            for n in range(104)
        ),
        *(
            Team(name=f"T{n}", slug=f"t{n:012}", created_at=start + dt.timedelta(minutes=n))
            for n in range(102)
        ),
    )

    async def page(kind: str, number: int | str | None) -> dict[str, Any]:
        params = {} if number is None else {"page": number}
        resp = await client.get(f"/v1/admin/{kind}", params=params, headers=admin_h)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    first = await page("users", None)
    assert (first["total"], first["page"], first["per_page"], first["total_pages"]) == (
        105,
        1,
        100,
        2,
    )
    # Newest first: the admin, then the inserted accounts from the last.
    emails = [u["email"] for u in first["users"]]
    assert emails[:2] == ["root@example.com", "u103@example.com"]
    assert len(emails) == 100
    second = await page("users", 2)
    assert [u["email"] for u in second["users"]] == [
        f"u{n:03}@example.com" for n in range(4, -1, -1)
    ]
    assert (second["page"], second["total"]) == (2, 105)
    assert (await page("users", 3))["users"] == []

    teams = await page("teams", 1)
    assert (teams["total"], teams["total_pages"], len(teams["teams"])) == (103, 2, 100)
    assert teams["teams"][0]["id"] == admin["team_id"]
    last = await page("teams", 2)
    assert [t["name"] for t in last["teams"]] == ["T2", "T1", "T0"]
    assert all(t["owner_email"] == "" and t["member_count"] == 0 for t in last["teams"])

    for kind in ("users", "teams"):
        for bad in (0, -1, "x", "1.5"):
            resp = await client.get(f"/v1/admin/{kind}", params={"page": bad}, headers=admin_h)
            assert_error(resp, 400, "invalid_request")


async def test_team_deletion_refusals(client: httpx.AsyncClient, db: Database) -> None:
    world = await _world(client, db)
    admin_h = bearer(world["admin"]["token"])
    team = world["owner"]["team_id"]
    for headers in (bearer(world["owner"]["token"]), bearer(world["member_token"])):
        assert_error(
            await client.delete(f"/v1/admin/teams/{team}", headers=headers), 403, "forbidden"
        )
    resp = await client.delete(f"/v1/admin/teams/{team}", headers={"X-API-Key": world["api_key"]})
    assert_error(resp, 401, "unauthorized")
    platform = ids.TEAM.format(ids.PLATFORM_TEAM_ID)
    assert_error(
        await client.delete(f"/v1/admin/teams/{platform}", headers=admin_h), 403, "forbidden"
    )
    for bad in ("nope", f"usr-{uuid.uuid4()}"):
        resp = await client.delete(f"/v1/admin/teams/{bad}", headers=admin_h)
        assert_error(resp, 400, "invalid_request")
    missing = await client.delete(f"/v1/admin/teams/team-{uuid.uuid4()}", headers=admin_h)
    assert_error(missing, 404, "not_found")
    # Nothing changed by the refusals: the owner's key still works.
    resp = await client.get("/v1/capsules", headers={"X-API-Key": world["api_key"]})
    assert resp.status_code == 200, resp.text

    # The team's own templates go with it; the platform's stay.
    assert (await client.delete(f"/v1/admin/teams/{team}", headers=admin_h)).status_code == 204
    assert await _template_names(db) == {BASE}
    resp = await client.get("/v1/capsules", headers={"X-API-Key": world["api_key"]})
    assert_error(resp, 401, "unauthorized")
    async with db.sessionmaker() as session:
        gone = await session.get(Team, ids.TEAM.parse(team))
        assert gone is not None and gone.deleted_at is not None
    events = [e for e in await _admin_events(db) if e.resource_type == "team"]
    assert [(e.action, e.resource_id, e.actor_id) for e in events] == [
        ("delete", team, world["admin"]["user_id"])
    ]
    assert events[0].metadata_["members_removed"] == 2


async def test_users_list_status_as_the_go_system_names_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    """active; inactive (signed up with email verification, link not used yet); disabled
    (deactivated by an admin, even if it never activated)."""
    admin = await signup(client, email="root@example.com", name="Root")
    waiting = User(email="waiting@example.com", name="W", is_active=False)
    disabled = User(email="disabled@example.com", name="D", is_active=False)
    await _add(db, waiting, disabled)
    link = UserToken(
        user_id=waiting.id,
        purpose="activation",
        token_hash="a" * 64,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    await _add(db, link)
    resp = await client.get("/v1/admin/users", headers=bearer(admin["token"]))
    assert resp.status_code == 200, resp.text
    statuses = {u["email"]: (u["status"], u["is_active"]) for u in resp.json()["users"]}
    assert statuses == {
        "root@example.com": ("active", True),
        "waiting@example.com": ("inactive", False),
        "disabled@example.com": ("disabled", False),
    }
    # Once the link is used (or the admin deactivates it afterwards), it is no longer waiting.
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(UserToken).where(UserToken.id == link.id).values(used_at=dt.datetime.now(dt.UTC))
        )
    resp = await client.get("/v1/admin/users", headers=bearer(admin["token"]))
    assert {u["email"]: u["status"] for u in resp.json()["users"]}["waiting@example.com"] == (
        "disabled"
    )
