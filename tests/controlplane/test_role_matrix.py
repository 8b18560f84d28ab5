"""Roles across every team and platform route: one table, one row per route (a few routes have
several rows, one per kind of target), one expected status per kind of caller.

The world: a platform admin (the first account, in none of the teams below), team "Olive" with
its owner (who created it), an admin and a member, team "Mel" with its own owner (the outsider),
and an API key of Olive. Olive has a paused capsule with no host (so no route ever reaches a host
agent: the routes that need a running capsule answer 409 before any agent call) and a snapshot
template. Olive may bring its own hosts (BYOC): it has a pending host tagged "ssd". There are two
pending shared (regular) hosts, one with a registration token for the agent, and a registered
shared host, offline (so that nothing is ever placed on it or asked of its agent), with a host
JWT and a refresh token. None of them runs a
capsule, so deleting one never calls its agent either.

The host agent's own routes (register, refresh, heartbeat) take no user credentials: their rows
carry the agent's credential (body or X-Host-Token) and every caller gets the same answer, whatever
user credentials come along.

Each request is followed by a reset of that world, so destructive rows (deleting the team,
removing members, revoking keys, deleting hosts...) cannot change what later rows see.

`test_every_team_and_platform_route_has_a_row` makes sure a new route under these prefixes
cannot be added without a row here. Authentication itself (anonymous, forged or expired
credentials) is `test_permission_matrix.py`'s business.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import delete, select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import (
    APIKey,
    Invitation,
    Sandbox,
    Team,
    TeamMember,
    Template,
    User,
)
from wrenn_server.controlplane.db.models.capsules import TemplateBuild
from wrenn_server.controlplane.db.models.hosts import Host, HostRefreshToken, HostTag, HostToken
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.security import (
    HOST_REFRESH_PREFIX,
    HOST_REGISTRATION_PREFIX,
    TokenCodec,
    generate_credential,
    hash_credential,
)

from .helpers import bearer, signup
from .team_helpers import add_member, create_team, login, switch

# Who calls, in the order of each row's statuses. The owner comes last, so that when a row
# destroys something the other callers have already been asked.
CALLERS = ("member", "admin", "outsider", "platform_admin", "api_key", "owner")
PREFIXES = (
    "/v1/teams",
    "/v1/api-keys",
    "/v1/audit-logs",
    "/v1/users/search",
    "/v1/admin",
    "/v1/auth/switch-team",
    "/v1/capsules",
    "/v1/snapshots",
    "/v1/hosts",
)
SNAPSHOT = "olive-snap"
PLATFORM_BASE = "matrix-base"
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Row:
    method: str
    route: str  # the OpenAPI path; its parameters are filled from `args`, else by default
    # Statuses for (member, admin, outsider, platform admin, API key, owner).
    expect: tuple[int, int, int, int, int, int]
    body: dict[str, Any] | None = None
    args: dict[str, str] = field(default_factory=dict)
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # sent with the caller's own


# Shorthands for the most common shapes.
TEAM_READ = (200, 200, 404, 404, 401, 200)  # Olive's members only; others are told nothing
USER_ANY = (200, 200, 200, 200, 401, 200)  # any user session, acting in its own active team
ADMIN_ONLY = (403, 403, 403, 200, 401, 403)  # platform admins' user sessions
OWN_CAPSULE = (200, 200, 404, 404, 200, 200)  # Olive's callers, key included; others 404
NOT_RUNNING = (409, 409, 404, 404, 409, 409)  # needs a running capsule: refused before the host
ANY_TEAM = (200,) * 6  # any caller, about its own active team
OLIVE_HOST_READ = (200, 200, 404, 200, 401, 200)  # Olive's members and platform admins
OLIVE_HOST_WRITE = (403, 204, 404, 204, 401, 204)  # Olive's owner/admin and platform admins
SHARED_HOST_WRITE = (404, 404, 404, 204, 401, 404)  # platform admins; others do not see it
# Platform capsules: platform admins' sessions, about the platform team's capsules only (Olive's
# capsule is not one: 404).
PLATFORM_CAPSULE = (403, 403, 403, 404, 401, 403)

# fmt: off
ROWS: tuple[Row, ...] = (
    # --- Session and user lookup
    Row("post", "/v1/auth/switch-team", (200, 200, 403, 403, 401, 200), body={"team_id": "{team}"}),
    Row("get", "/v1/users/search", USER_ANY, query="email=ada@"),
    Row("get", "/v1/audit-logs", USER_ANY),
    # --- API keys (of the caller's active team)
    Row("get", "/v1/api-keys", USER_ANY),
    Row("post", "/v1/api-keys", (201, 201, 201, 201, 401, 201), body={"name": "ci"}),
    # The owner's key: only an owner or admin of Olive may revoke it.
    Row("delete", "/v1/api-keys/{id}", (403, 204, 404, 404, 401, 204), args={"id": "owner_key"}),
    # The member's own key: its creator may revoke it too.
    Row("delete", "/v1/api-keys/{id}", (204, 204, 404, 404, 401, 204), args={"id": "member_key"}),
    # --- Teams
    Row("get", "/v1/teams", USER_ANY),
    Row("post", "/v1/teams", (201, 201, 201, 201, 401, 201), body={"name": "Spare"}),
    Row("get", "/v1/teams/{id}", TEAM_READ),
    Row("patch", "/v1/teams/{id}", (403, 204, 404, 404, 401, 204), body={"name": "Olive 2"}),
    Row("get", "/v1/teams/{id}/members", TEAM_READ),
    Row("get", "/v1/teams/{id}/quotas", TEAM_READ),
    Row("get", "/v1/teams/{id}/parking", TEAM_READ),
    Row("put", "/v1/teams/{id}/parking", (403, 200, 404, 404, 401, 200),
        body={"idle_sec": 300, "auto_resume": True}),
    Row("post", "/v1/teams/{id}/members", (403, 201, 404, 404, 401, 201),
        body={"email": "{spare_email}"}),
    # Role changes: admins manage members; only the owner manages admins; no one the owner.
    Row("patch", "/v1/teams/{id}/members/{uid}", (403, 204, 404, 404, 401, 204),
        body={"role": "admin"}, args={"uid": "member"}),
    Row("patch", "/v1/teams/{id}/members/{uid}", (403, 403, 404, 404, 401, 204),
        body={"role": "member"}, args={"uid": "admin"}),
    Row("patch", "/v1/teams/{id}/members/{uid}", (403, 403, 404, 404, 401, 403),
        body={"role": "admin"}, args={"uid": "owner"}),
    Row("delete", "/v1/teams/{id}/members/{uid}", (403, 204, 404, 404, 401, 204),
        args={"uid": "member"}),
    Row("delete", "/v1/teams/{id}/members/{uid}", (403, 403, 404, 404, 401, 204),
        args={"uid": "admin"}),
    Row("delete", "/v1/teams/{id}/members/{uid}", (403, 403, 404, 404, 401, 403),
        args={"uid": "owner"}),
    Row("post", "/v1/teams/{id}/leave", (204, 204, 404, 404, 401, 403)),
    Row("delete", "/v1/teams/{id}", (403, 403, 404, 404, 401, 204)),
    # --- Platform administration
    Row("get", "/v1/admin/teams", ADMIN_ONLY),
    Row("put", "/v1/admin/teams/{id}/byoc", (403, 403, 403, 204, 401, 403),
        body={"enabled": True}),
    Row("get", "/v1/admin/teams/{id}/quotas", ADMIN_ONLY),
    # Olive's paused capsule has no host: it is recorded stopped without an agent call.
    Row("delete", "/v1/admin/teams/{id}", (403, 403, 403, 204, 401, 403)),
    Row("put", "/v1/admin/teams/{id}/quotas", (403, 403, 403, 200, 401, 403),
        body={"max_capsules": 5}),
    Row("get", "/v1/admin/templates", ADMIN_ONLY),
    Row("delete", "/v1/admin/templates/{name}", (403, 403, 403, 204, 401, 403)),
    Row("get", "/v1/admin/capsules", ADMIN_ONLY),
    Row("get", "/v1/admin/users", ADMIN_ONLY),
    Row("post", "/v1/admin/users", (403, 403, 403, 201, 401, 403),
        body={"email": "newcomer@example.com", "name": "Newcomer"}),
    # Reactivating an active member: a no-op that leaves the world's sessions valid.
    Row("put", "/v1/admin/users/{id}/active", (403, 403, 403, 204, 401, 403),
        body={"active": True}, args={"id": "member"}),
    Row("get", "/v1/admin/invitations", ADMIN_ONLY),
    Row("post", "/v1/admin/invitations", (403, 403, 403, 201, 401, 403),
        body={"email": "invitee@example.com"}),
    Row("delete", "/v1/admin/invitations/{id}", (403, 403, 403, 204, 401, 403),
        args={"id": "invitation"}),
    Row("get", "/v1/admin/audit-logs", ADMIN_ONLY),
    # The world has no base template: a platform admin's create gets as far as checking it.
    Row("post", "/v1/admin/capsules", (403, 403, 403, 400, 401, 403), body={}),
    *(
        Row(method, "/v1/admin/capsules/{id}" + tail, PLATFORM_CAPSULE, body=body,
            args={"id": "capsule"})
        for method, tail, body in (
            ("get", "", None),
            ("patch", "", {"public_ports": [8000]}),
            ("delete", "", None),
            ("post", "/pause", None),
            ("post", "/resume", None),
            ("post", "/ping", None),
            ("post", "/exec", {"cmd": "true"}),
            ("get", "/processes", None),
            ("delete", "/processes/{selector}", None),
            ("post", "/files/write", None),
            ("post", "/files/stream/write", None),
            ("post", "/files/read", {"path": "/etc/hostname"}),
            ("post", "/files/stream/read", {"path": "/etc/hostname"}),
            ("post", "/files/list", {"path": "/"}),
            ("post", "/files/mkdir", {"path": "/tmp/d"}),
            ("post", "/files/remove", {"path": "/tmp/d"}),
            ("post", "/snapshot", {"name": "platform-snap"}),
        )
    ),
    Row("get", "/v1/admin/builds", ADMIN_ONLY),
    Row("post", "/v1/admin/builds", (403, 403, 403, 201, 401, 403),
        body={"name": "matrix-build", "recipe": ["RUN true"], "base_template": PLATFORM_BASE}),
    Row("get", "/v1/admin/builds/{id}", ADMIN_ONLY, args={"id": "build"}),
    Row("post", "/v1/admin/builds/{id}/cancel", ADMIN_ONLY, args={"id": "build"}),
    # --- Capsules (user sessions and API keys alike, in the caller's active team)
    Row("get", "/v1/capsules", ANY_TEAM),
    # Olive's own template: Olive's callers get as far as placing it (no host: 503); anyone
    # else is told the template does not exist (400, a bad name in the body).
    Row("post", "/v1/capsules", (503, 503, 400, 400, 503, 503), body={"template": SNAPSHOT}),
    Row("get", "/v1/capsules/stats", ANY_TEAM),
    Row("get", "/v1/capsules/usage", ANY_TEAM),
    Row("get", "/v1/capsules/{id}", OWN_CAPSULE),
    Row("get", "/v1/capsules/{id}/metrics", OWN_CAPSULE),
    Row("patch", "/v1/capsules/{id}", OWN_CAPSULE, body={"public_ports": [8000]}),
    # A preview link may be made for a paused capsule (the proxy resumes it or says so).
    Row("post", "/v1/capsules/{id}/ports/{port}/url", OWN_CAPSULE),
    Row("post", "/v1/capsules/{id}/pause", NOT_RUNNING),  # paused, not running
    Row("post", "/v1/capsules/{id}/resume", NOT_RUNNING),  # paused, but its host is gone
    Row("post", "/v1/capsules/{id}/ping", NOT_RUNNING),
    Row("post", "/v1/capsules/{id}/exec", NOT_RUNNING, body={"cmd": "true"}),
    Row("get", "/v1/capsules/{id}/processes", NOT_RUNNING),
    Row("delete", "/v1/capsules/{id}/processes/{selector}", NOT_RUNNING),
    Row("get", "/v1/capsules/{id}/ports", NOT_RUNNING),
    Row("post", "/v1/capsules/{id}/files/write", NOT_RUNNING),
    Row("post", "/v1/capsules/{id}/files/stream/write", NOT_RUNNING),
    Row("post", "/v1/capsules/{id}/files/read", NOT_RUNNING, body={"path": "/etc/hostname"}),
    Row("post", "/v1/capsules/{id}/files/stream/read", NOT_RUNNING, body={"path": "/etc/hostname"}),
    Row("post", "/v1/capsules/{id}/files/list", NOT_RUNNING, body={"path": "/"}),
    Row("post", "/v1/capsules/{id}/files/mkdir", NOT_RUNNING, body={"path": "/tmp/d"}),
    Row("post", "/v1/capsules/{id}/files/remove", NOT_RUNNING, body={"path": "/tmp/d"}),
    # No host is contacted: the capsule has none; it is marked stopped.
    Row("delete", "/v1/capsules/{id}", (204, 204, 404, 404, 204, 204)),
    # --- Snapshots
    Row("get", "/v1/snapshots", ANY_TEAM),
    # A paused capsule may be snapshotted, but its host is gone: 409 before any agent call.
    Row("post", "/v1/snapshots", NOT_RUNNING, body={"sandbox_id": "{capsule}", "name": "snap2"}),
    # Any of Olive's callers may delete Olive's snapshot (no host is online to clean up).
    Row("delete", "/v1/snapshots/{name}", (204, 204, 404, 404, 204, 204)),
    # --- Hosts (user sessions only)
    Row("get", "/v1/hosts", USER_ANY),
    Row("post", "/v1/hosts", (403, 403, 403, 201, 401, 403), body={"type": "regular"}),
    Row("post", "/v1/hosts", (403, 201, 404, 201, 401, 201),
        body={"type": "byoc", "team_id": "{team}"}),
    # Mel does not have BYOC: its owner (the outsider) and platform admins are refused (403).
    Row("post", "/v1/hosts", (404, 404, 403, 403, 401, 404),
        body={"type": "byoc", "team_id": "{mel}"}),
    Row("get", "/v1/hosts/{id}", OLIVE_HOST_READ),
    Row("get", "/v1/hosts/{id}", (404, 404, 404, 200, 401, 404), args={"id": "shared_host"}),
    Row("delete", "/v1/hosts/{id}", OLIVE_HOST_WRITE),
    Row("delete", "/v1/hosts/{id}", SHARED_HOST_WRITE, args={"id": "shared_host"}),
    Row("post", "/v1/hosts/{id}/token", (403, 201, 404, 201, 401, 201)),
    Row("post", "/v1/hosts/{id}/token", (404, 404, 404, 201, 401, 404),
        args={"id": "shared_host"}),
    Row("post", "/v1/hosts/{id}/token", (404, 404, 404, 409, 401, 404),
        args={"id": "registered_host"}),  # registered already: 409
    Row("get", "/v1/hosts/{id}/delete-preview", (403, 200, 404, 200, 401, 200)),
    Row("get", "/v1/hosts/{id}/tags", OLIVE_HOST_READ),
    Row("post", "/v1/hosts/{id}/tags", OLIVE_HOST_WRITE, body={"tag": "gpu"}),
    Row("post", "/v1/hosts/{id}/tags", SHARED_HOST_WRITE, body={"tag": "gpu"},
        args={"id": "shared_host"}),
    Row("delete", "/v1/hosts/{id}/tags/{tag}", OLIVE_HOST_WRITE),
    # The agent's routes: only the credential it sends counts; a user's is neither needed nor
    # enough.
    Row("post", "/v1/hosts/register", (201,) * 6,
        body={"token": "{registration_token}", "address": "unix:///run/wrenn/agent.sock"}),
    Row("post", "/v1/hosts/auth/refresh", (200,) * 6, body={"refresh_token": "{refresh_token}"}),
    Row("post", "/v1/hosts/{id}/heartbeat", (204,) * 6, args={"id": "registered_host"},
        headers={"X-Host-Token": "{host_token}"}),
    Row("post", "/v1/hosts/{id}/heartbeat", (401,) * 6, args={"id": "registered_host"}),
)
# fmt: on

PARAM = re.compile(r"\{([^}]+)\}")


def _default_arg(route: str, param: str) -> str:
    if param == "id":
        if route.startswith("/v1/capsules"):
            return "capsule"
        if route.startswith("/v1/api-keys"):
            return "owner_key"
        if route.startswith("/v1/hosts"):
            return "olive_host"
        return "team"
    names = {"uid": "member", "name": "snapshot", "selector": "selector", "tag": "tag"}
    return {**names, "port": "port"}[param]


def _fill(text: str, world: dict[str, str]) -> str:
    return PARAM.sub(lambda m: world[m.group(1)], text)


def _request_of(row: Row, world: dict[str, str]) -> tuple[str, Any, dict[str, str]]:
    def arg(match: re.Match[str]) -> str:
        param = match.group(1)
        return world[row.args.get(param) or _default_arg(row.route, param)]

    path = PARAM.sub(arg, row.route)
    if row.query:
        path += "?" + row.query
    body = None
    if row.body is not None:
        body = {k: _fill(v, world) if isinstance(v, str) else v for k, v in row.body.items()}
    return path, body, {k: _fill(v, world) for k, v in row.headers.items()}


def _covered_operations(app: FastAPI) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in app.openapi()["paths"].items()
        if path.startswith(PREFIXES)
        for method in item
        if method in METHODS
    }


def test_every_team_and_platform_route_has_a_row(app: FastAPI) -> None:
    operations = _covered_operations(app)
    rows = {(row.method, row.route) for row in ROWS}
    assert operations - rows == set(), "routes without a row in the role matrix"
    assert rows - operations == set(), "rows for routes that do not exist"


async def _reset_hosts(db: Database, world: dict[str, str]) -> None:
    """The hosts as built: Olive's pending BYOC host tagged "ssd", a pending shared host, a
    pending shared host whose agent has a registration token, a registered but offline shared
    host with a refresh token; no other host. Rows are recreated with the same ids, so the
    registered host's JWT stays valid."""
    team = ids.TEAM.parse(world["team"])

    def host_id(key: str) -> Any:
        return ids.HOST.parse(world[key])

    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(delete(Host))  # tokens and tags go with them
        session.add_all(
            [
                Host(id=host_id("olive_host"), type="byoc", team_id=team, status="pending"),
                Host(id=host_id("shared_host"), type="regular", status="pending"),
                Host(id=host_id("agent_host"), type="regular", status="pending"),
                Host(
                    id=host_id("registered_host"), type="regular", status="offline",
                    address="10.0.0.8:7000", last_heartbeat_at=utcnow(),
                ),
            ]
        )  # fmt: skip
        await session.flush()
        later = utcnow() + dt.timedelta(hours=1)
        session.add_all(
            [
                HostTag(host_id=host_id("olive_host"), tag=world["tag"]),
                HostToken(
                    host_id=host_id("agent_host"),
                    token_hash=hash_credential(world["registration_token"]),
                    expires_at=later,
                ),
                HostRefreshToken(
                    host_id=host_id("registered_host"),
                    token_hash=hash_credential(world["refresh_token"]),
                    expires_at=later,
                ),
            ]
        )


async def _build_world(
    client: httpx.AsyncClient, db: Database, codec: TokenCodec
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    # The first account of the installation is the platform admin.
    platform_admin = await signup(client, email="root@example.com", name="Root")
    owner = await signup(client, email="owner@example.com", name="Olive Owner")
    admin = await signup(client, email="admin@example.com", name="Olive Admin")
    member = await signup(client, email="member@example.com", name="Olive Member")
    outsider = await signup(client, email="outsider@example.com", name="Mel Owner")
    await signup(client, email="spare@example.com", name="Spare")

    team = (await create_team(client, owner["token"], "Olive"))["id"]
    owner_token = await switch(client, owner["token"], team)
    await add_member(client, owner_token, team, "admin@example.com", role="admin")
    await add_member(client, owner_token, team, "member@example.com")
    resp = await client.put(
        f"/v1/admin/teams/{team}/byoc",
        json={"enabled": True},
        headers=bearer(platform_admin["token"]),
    )
    assert resp.status_code == 204, resp.text
    admin_token = await switch(client, (await login(client, "admin@example.com"))["token"], team)
    member_token = await switch(client, (await login(client, "member@example.com"))["token"], team)

    async def key(token: str, name: str) -> dict[str, Any]:
        resp = await client.post("/v1/api-keys", json={"name": name}, headers=bearer(token))
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()
        return body

    invitation = await client.post(
        "/v1/admin/invitations",
        json={"email": "invited@example.com"},
        headers=bearer(platform_admin["token"]),
    )
    assert invitation.status_code == 201, invitation.text
    caller_key = await key(owner_token, "caller")
    owner_key = await key(owner_token, "owner's")
    member_key = await key(member_token, "member's")

    team_uuid = ids.TEAM.parse(team)
    capsule = ids.new_id()
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(Template(name=SNAPSHOT, team_id=team_uuid, type="snapshot"))
        # What builds start from: a platform template.
        session.add(Template(name=PLATFORM_BASE, team_id=ids.PLATFORM_TEAM_ID, type="base"))
        await session.flush()
        # No host: nothing any route does can reach a host agent.
        session.add(
            Sandbox(
                id=capsule, team_id=team_uuid, template=SNAPSHOT, status="paused", vcpus=1,
                memory_mb=512,
            )
        )  # fmt: skip
        admins = {
            u.email: u.is_admin for u in await session.scalars(select(User).order_by(User.email))
        }
    assert admins == {
        "root@example.com": True,
        "owner@example.com": False,
        "admin@example.com": False,
        "member@example.com": False,
        "outsider@example.com": False,
        "spare@example.com": False,
    }

    world = {
        "team": team,
        "member": member["user_id"],
        "admin": admin["user_id"],
        "owner": owner["user_id"],
        "spare_email": "spare@example.com",
        "owner_key": owner_key["id"],
        "member_key": member_key["id"],
        "capsule": ids.SANDBOX.format(capsule),
        "snapshot": SNAPSHOT,
        "selector": "1",
        "port": "8000",
        "mel": outsider["team_id"],
        "tag": "ssd",
        "registration_token": generate_credential(HOST_REGISTRATION_PREFIX).plaintext,
        "refresh_token": generate_credential(HOST_REFRESH_PREFIX).plaintext,
        "build": ids.BUILD.format(ids.new_id()),
        "invitation": invitation.json()["id"],
    }
    for host in ("olive_host", "shared_host", "agent_host", "registered_host"):
        world[host] = ids.HOST.format(ids.new_id())
    world["host_token"] = codec.issue_host(
        ids.HOST.parse(world["registered_host"]), dt.timedelta(days=1)
    )
    await _reset_hosts(db, world)
    await _reset_builds(db, world)
    callers = {
        "member": bearer(member_token),
        "admin": bearer(admin_token),
        "owner": bearer(owner_token),
        "outsider": bearer(outsider["token"]),
        "platform_admin": bearer(platform_admin["token"]),
        "api_key": {"X-API-Key": caller_key["key"]},
    }
    return world, callers


async def _reset(db: Database, world: dict[str, str]) -> None:
    """Put Olive back as it was built: its members and roles, keys, capsule and snapshot."""
    team = ids.TEAM.parse(world["team"])
    roles = {
        ids.USER.parse(world["owner"]): "owner",
        ids.USER.parse(world["admin"]): "admin",
        ids.USER.parse(world["member"]): "member",
    }
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(Team).where(Team.id == team).values(name="Olive", deleted_at=None, is_byoc=True)
        )
        await session.execute(
            delete(TeamMember).where(
                TeamMember.team_id == team, TeamMember.user_id.not_in(list(roles))
            )
        )
        for user_id, role in roles.items():
            membership = await session.get(TeamMember, (team, user_id))
            if membership is None:
                session.add(TeamMember(team_id=team, user_id=user_id, role=role, is_default=False))
            else:
                membership.role = role
        await session.execute(update(APIKey).where(APIKey.team_id == team).values(revoked_at=None))
        await session.execute(update(Invitation).values(revoked_at=None))
        if await session.scalar(select(Template).where(Template.name == SNAPSHOT)) is None:
            session.add(Template(name=SNAPSHOT, team_id=team, type="snapshot"))
        await session.flush()
        await session.execute(
            update(Sandbox)
            .where(Sandbox.id == ids.SANDBOX.parse(world["capsule"]))
            .values(status="paused")
        )
    await _reset_hosts(db, world)
    await _reset_builds(db, world)


async def _reset_builds(db: Database, world: dict[str, str]) -> None:
    """One queued build; none submitted by a row."""
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(delete(TemplateBuild))
        session.add(
            TemplateBuild(
                id=ids.BUILD.parse(world["build"]), name="queued", base_template="minimal",
                recipe=["RUN true"], vcpus=1, memory_mb=512, status="pending",
            )
        )  # fmt: skip


async def test_role_matrix(app: FastAPI, client: httpx.AsyncClient, db: Database) -> None:
    world, callers = await _build_world(client, db, app.state.codec)
    mismatches = []
    for row in ROWS:
        path, body, extra_headers = _request_of(row, world)
        for caller, expected in zip(CALLERS, row.expect, strict=True):
            headers = {**callers[caller], **extra_headers}
            resp = await client.request(row.method, path, json=body, headers=headers)
            if resp.status_code != expected:
                mismatches.append(
                    f"{row.method.upper()} {path} as {caller}: expected {expected}, "
                    f"got {resp.status_code} {resp.text[:200]}"
                )
            if row.method != "get":
                await _reset(db, world)
    assert not mismatches, "\n".join(mismatches)
