"""Snapshot templates over REST with real capsules: made from a running capsule, started
from, listed with the platform's base template, overwritten, deleted; team-scoped."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import User
from wrenn_server.controlplane.db.models.capsules import Template
from wrenn_server.controlplane.db.session import Database
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import assert_error
from .rest_fixtures import Account, both_dialects, make_capsule, new_account, sh, status_of

pytestmark = [pytest.mark.integration, both_dialects]


def unique_name() -> str:
    return f"rest-{uuid.uuid4().hex[:10]}"


async def agent_templates(agent: AgentClient) -> set[str]:
    listed = await agent.list_templates(pb.Empty())
    return {t.name for t in listed.templates}


async def stored_as(db: Database, user: Account, name: str) -> str:
    """The name the host agent holds the team's template under (its own, per team)."""
    async with db.sessionmaker() as session:
        stored = await session.scalar(
            select(Template.storage_name).where(
                Template.team_id == ids.TEAM.parse(user.team_id), Template.name == name
            )
        )
    assert stored is not None
    return stored


async def snapshot(
    api: httpx.AsyncClient, user: Account, capsule_id: str, name: str | None, **params: str
) -> httpx.Response:
    body: dict[str, Any] = {"sandbox_id": capsule_id}
    if name is not None:
        body["name"] = name
    return await api.post("/v1/snapshots", json=body, params=params, headers=user.h)


async def listed(api: httpx.AsyncClient, user: Account, **params: str) -> dict[str, str]:
    resp = await api.get("/v1/snapshots", params=params, headers=user.h)
    assert resp.status_code == 200, resp.text
    return {t["name"]: t["type"] for t in resp.json()}


async def test_snapshot_lifecycle(
    api: httpx.AsyncClient, agent: AgentClient, rest_db: Database
) -> None:
    user = await new_account(api)
    # Not the default shape, which the agent hands over from its warm pool: capsules restored
    # from snapshots of pooled capsules intermittently fail every command with "unknown user:
    # root" (a host agent bug, reproducible over gRPC alone).
    src = await make_capsule(api, user, memory_mb=256)
    await sh(api, user, src["id"], "echo v1 > /home/wrenn-user/marker")
    name = unique_name()

    resp = await snapshot(api, user, src["id"], name)
    assert resp.status_code == 201, resp.text
    template = resp.json()
    assert (template["name"], template["type"]) == (name, "snapshot")
    assert (template["vcpus"], template["memory_mb"]) == (1, 256)
    assert template["size_bytes"] > 0 and template["created_at"]
    stored = await stored_as(rest_db, user, name)
    assert stored in await agent_templates(agent)
    # The source capsule is paused by the snapshot, not lost.
    assert await status_of(api, user, src["id"]) == "paused"

    # A new capsule from the snapshot has the file.
    child = await make_capsule(api, user, template=name)
    assert child["template"] == name
    assert (await sh(api, user, child["id"], "cat /home/wrenn-user/marker"))["stdout"] == "v1\n"

    # Listing: the platform's base template and the team's snapshot, filterable by type.
    assert (await listed(api, user)) == {"minimal": "base", name: "snapshot"}
    assert (await listed(api, user, type="base")) == {"minimal": "base"}
    assert (await listed(api, user, type="snapshot")) == {name: "snapshot"}
    resp = await api.get("/v1/snapshots", params={"type": "image"}, headers=user.h)
    assert_error(resp, 400, "invalid_request")

    # Names are unique: a second snapshot under the name is taken, unless overwriting.
    resp = await snapshot(api, user, src["id"], name)
    assert_error(resp, 409, "template_name_taken")
    resp = await snapshot(api, user, child["id"], "minimal")
    assert_error(resp, 409, "name_reserved")  # a platform template's
    assert await status_of(api, user, child["id"]) == "running"  # refused before any change
    resp = await api.post(f"/v1/capsules/{src['id']}/resume", headers=user.h)
    assert resp.status_code == 200, resp.text
    await sh(api, user, src["id"], "echo v2 > /home/wrenn-user/marker")
    resp = await snapshot(api, user, src["id"], name, overwrite="true")
    assert resp.status_code == 201, resp.text
    assert resp.json()["created_at"] >= template["created_at"]
    newer = await make_capsule(api, user, template=name)
    assert (await sh(api, user, newer["id"], "cat /home/wrenn-user/marker"))["stdout"] == "v2\n"
    assert (await listed(api, user, type="snapshot")) == {name: "snapshot"}

    # Delete: gone from the list and the host; a second delete and new capsules are refused.
    for capsule in (child, newer):
        assert (
            await api.delete(f"/v1/capsules/{capsule['id']}", headers=user.h)
        ).status_code == 204
    resp = await api.delete(f"/v1/snapshots/{name}", headers=user.h)
    assert resp.status_code == 204, resp.text
    assert stored not in await agent_templates(agent)
    assert name not in await listed(api, user)
    resp = await api.delete(f"/v1/snapshots/{name}", headers=user.h)
    assert_error(resp, 404, "not_found")
    resp = await api.post("/v1/capsules", json={"template": name}, headers=user.h)
    assert_error(resp, 400, "invalid_request")


async def test_platform_templates_are_shared_and_only_admins_delete_them(
    api: httpx.AsyncClient, agent: AgentClient, rest_db: Database
) -> None:
    # A throwaway platform template (never the base template: a broken check would delete it
    # from the host for every test after this one).
    name = unique_name()
    # Not the default shape: see test_snapshot_lifecycle.
    sb = await agent.create_sandbox(pb.CreateSandboxRequest(memory_mb=256))
    try:
        await agent.exec(
            pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="echo shared > /home/wrenn-user/marker")
        )
        made = await agent.create_snapshot(
            pb.CreateSnapshotRequest(sandbox_id=sb.sandbox_id, name=name)
        )
    finally:
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    async with rest_db.sessionmaker() as session, session.begin():
        session.add(
            Template(
                name=name, team_id=ids.PLATFORM_TEAM_ID, type="snapshot", size_bytes=made.size_bytes
            )
        )

    user, admin = await new_account(api), await new_account(api)
    async with rest_db.sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.email == admin.email).values(is_admin=True))
    assert (await api.get("/v1/me", headers=user.jwt)).json()["is_admin"] is False

    # Every team sees it and starts capsules from it.
    for account in (user, admin):
        assert (await listed(api, account, type="snapshot")) == {name: "snapshot"}
    capsule = await make_capsule(api, user, template=name)
    assert (await sh(api, user, capsule["id"], "cat /home/wrenn-user/marker"))[
        "stdout"
    ] == "shared\n"

    # Only a platform admin's session may delete it: not a team member, not an API key.
    for headers in (user.h, user.jwt, admin.h):
        resp = await api.delete(f"/v1/snapshots/{name}", headers=headers)
        assert_error(resp, 403, "forbidden")
    assert name in await agent_templates(agent)
    assert name in await listed(api, user)
    resp = await api.delete(f"/v1/snapshots/{name}", headers=admin.jwt)
    assert resp.status_code == 204, resp.text
    assert name not in await agent_templates(agent)
    assert name not in await listed(api, user)


async def test_snapshot_requests_are_team_scoped_and_checked(
    api: httpx.AsyncClient, agent: AgentClient, rest_db: Database
) -> None:
    owner, other = await new_account(api), await new_account(api)
    src = await make_capsule(api, owner)
    name = unique_name()
    resp = await snapshot(api, owner, src["id"], name)
    assert resp.status_code == 201, resp.text
    made = resp.json()

    # Another team neither sees nor deletes nor starts from it.
    theirs = await make_capsule(api, other)
    assert name not in await listed(api, other)
    assert (await listed(api, other, type="snapshot")) == {}
    resp = await api.delete(f"/v1/snapshots/{name}", headers=other.h)
    assert_error(resp, 404, "not_found")
    resp = await api.post("/v1/capsules", json={"template": name}, headers=other.h)
    assert_error(resp, 400, "invalid_request")
    # (Names are per team: the other team may take the name for a template of its own, which
    # test_two_teams_snapshot_into_the_same_name does.)
    assert (await listed(api, owner, type="snapshot")) == {name: "snapshot"}
    resp = await api.get("/v1/snapshots", headers=owner.h, params={"type": "snapshot"})
    assert resp.json()[0]["created_at"] == made["created_at"]
    assert await stored_as(rest_db, owner, name) in await agent_templates(agent)

    # Bad requests change nothing.
    for body in (
        {"sandbox_id": theirs["id"], "name": "../escape"},
        {"sandbox_id": theirs["id"], "name": ""},
        {"sandbox_id": theirs["id"], "name": "x" * 200},
        {"name": unique_name()},
        {},
    ):
        resp = await api.post("/v1/snapshots", json=body, headers=other.h)
        assert_error(resp, 400, "invalid_request")
    resp = await snapshot(api, other, theirs["id"], unique_name(), overwrite="yes")
    assert_error(resp, 400, "invalid_request")
    assert await status_of(api, other, theirs["id"]) == "running"
    assert (await listed(api, other, type="snapshot")) == {}

    # Without a name, one is made up.
    resp = await snapshot(api, other, theirs["id"], None)
    assert resp.status_code == 201, resp.text
    auto = resp.json()["name"]
    assert re.fullmatch(r"template-[0-9a-f]{8}", auto)
    assert (await listed(api, other, type="snapshot")) == {auto: "snapshot"}
    assert auto not in await listed(api, owner)


async def test_two_teams_snapshot_into_the_same_name(
    api: httpx.AsyncClient, agent: AgentClient, rest_db: Database
) -> None:
    """Names are per team: two teams snapshot their capsules into the same name, the host
    holds both, and each team's new capsules start from its own; one team deleting its
    template leaves the other's."""
    ada, bob = await new_account(api), await new_account(api)
    name = unique_name()
    for who in (ada, bob):
        # Not the default shape: see test_snapshot_lifecycle.
        src = await make_capsule(api, who, memory_mb=256)
        await sh(api, who, src["id"], f"echo {who.email} > /home/wrenn-user/owner")
        resp = await snapshot(api, who, src["id"], name)
        assert resp.status_code == 201, resp.text
        assert (resp.json()["name"], resp.json()["platform"]) == (name, False)
    adas, bobs = await stored_as(rest_db, ada, name), await stored_as(rest_db, bob, name)
    assert adas != bobs and {adas, bobs} <= await agent_templates(agent)

    children = {}
    for who in (ada, bob):
        assert (await listed(api, who, type="snapshot")) == {name: "snapshot"}
        child = await make_capsule(api, who, template=name)
        assert child["template"] == name
        owner = await sh(api, who, child["id"], "cat /home/wrenn-user/owner")
        assert owner["stdout"] == f"{who.email}\n"
        children[who.email] = child["id"]

    # Ada's template goes (its capsule first: a template in use stays); Bob's stays.
    gone = await api.delete(f"/v1/capsules/{children[ada.email]}", headers=ada.h)
    assert gone.status_code == 204, gone.text
    resp = await api.delete(f"/v1/snapshots/{name}", headers=ada.h)
    assert resp.status_code == 204, resp.text
    on_host = await agent_templates(agent)
    assert adas not in on_host and bobs in on_host
    resp = await api.post("/v1/capsules", json={"template": name}, headers=ada.h)
    assert_error(resp, 400, "invalid_request")
    again = await make_capsule(api, bob, template=name)
    owner = await sh(api, bob, again["id"], "cat /home/wrenn-user/owner")
    assert owner["stdout"] == f"{bob.email}\n"
