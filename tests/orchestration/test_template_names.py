"""Template names are per team, over the fake host agent: two teams each own a template `x`,
start capsules from their own, replace and delete their own without touching the other's, and
never see the other's; the host agent holds each under a storage name of its own. A platform
template's name stays reserved for teams; one the platform names after a team's template later
leaves that team's meaning its own."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import Template

from ..controlplane.helpers import assert_error
from ..waiting import wait_for
from .conftest import Stack
from .helpers import Account, make_capsule, new_account, new_admin

ADMIN = "/v1/admin/capsules"
PLATFORM = ids.TEAM.format(ids.PLATFORM_TEAM_ID)


async def _write(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    cid: str,
    body: bytes,
    *,
    at: str = "/v1/capsules",
) -> None:
    resp = await api.post(
        f"{at}/{cid}/files/write",
        data={"path": "/srv/owner"},
        files={"file": ("owner", body, "application/octet-stream")},
        headers=headers,
    )
    assert resp.status_code == 204, resp.text


async def _owner_file(api: httpx.AsyncClient, account: Account, template: str) -> bytes:
    """What /srv/owner holds in a new capsule of the account's team from `template`."""
    cid = (await make_capsule(api, account, template=template))["id"]
    resp = await api.post(
        f"/v1/capsules/{cid}/files/read", json={"path": "/srv/owner"}, headers=account.h
    )
    assert resp.status_code == 200, resp.text
    return resp.content


async def _snapshot(
    api: httpx.AsyncClient, account: Account, content: bytes, *, overwrite: bool = False
) -> dict[str, object]:
    """A capsule of the account's team with /srv/owner = content, snapshotted into `x`."""
    cid = (await make_capsule(api, account))["id"]
    await _write(api, account.h, cid, content)
    resp = await api.post(
        "/v1/snapshots",
        json={"sandbox_id": cid, "name": "x"},
        params={"overwrite": "true"} if overwrite else {},
        headers=account.h,
    )
    assert resp.status_code == 201, resp.text
    made: dict[str, object] = resp.json()
    return made


async def _stored(stack: Stack, team_wire_id: str, name: str = "x") -> str | None:
    async with stack.db.sessionmaker() as session:
        return await session.scalar(
            select(Template.storage_name).where(
                Template.team_id == ids.TEAM.parse(team_wire_id), Template.name == name
            )
        )


async def _listed(api: httpx.AsyncClient, account: Account) -> list[tuple[str, bool]]:
    resp = await api.get("/v1/snapshots", headers=account.h)
    assert resp.status_code == 200, resp.text
    return sorted((t["name"], t["platform"]) for t in resp.json())


async def test_two_teams_each_own_a_template_x(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    ada, bob = await new_account(api), await new_account(api)

    made = {who: await _snapshot(api, who, who.email.encode()) for who in (ada, bob)}
    # The wire shows the name each team gave, as its own.
    assert [(m["name"], m["platform"]) for m in made.values()] == [("x", False)] * 2
    stored = {who: await _stored(stack, who.team_id) for who in (ada, bob)}
    assert stored[ada] != stored[bob]
    for who in (ada, bob):
        name = stored[who]
        assert name is not None and name.startswith("x.") and len(name) <= 128
        assert name in agent.templates
    # Neither team sees the other's; each sees its own and the platform's.
    for who in (ada, bob):
        assert await _listed(api, who) == [("minimal", True), ("x", False)]

    # Each team's capsules start from its own x: the agent is given that team's storage name.
    for who in (ada, bob):
        assert await _owner_file(api, who, "x") == who.email.encode()
    cids = {s.template for s in agent.sandboxes.values()}
    assert {stored[ada], stored[bob]} <= cids
    # A capsule shows the name as its team knows it.
    listed = (await api.get("/v1/capsules", headers=ada.h)).json()
    assert {c["template"] for c in listed} == {"minimal", "x"}

    # Ada replaces her x: Bob's is untouched (same files, same storage name).
    bobs_before = agent.templates[str(stored[bob])]
    await _snapshot(api, ada, b"ada again", overwrite=True)
    assert await _stored(stack, ada.team_id) == stored[ada]  # replaced in place
    assert agent.templates[str(stored[bob])] is bobs_before
    assert await _owner_file(api, ada, "x") == b"ada again"
    assert await _owner_file(api, bob, "x") == bob.email.encode()
    # Without overwrite, her own name is taken; Bob's x is no reason for a refusal.
    cid = (await make_capsule(api, ada))["id"]
    resp = await api.post("/v1/snapshots", json={"sandbox_id": cid, "name": "x"}, headers=ada.h)
    assert_error(resp, 409, "template_name_taken")

    # Ada deletes her x: Bob's stays, on the agent and for his capsules.
    assert (await api.delete("/v1/snapshots/x", headers=ada.h)).status_code == 204
    assert stored[ada] not in agent.templates
    assert stored[bob] in agent.templates
    assert await _listed(api, ada) == [("minimal", True)]
    assert await _listed(api, bob) == [("minimal", True), ("x", False)]
    resp = await api.post("/v1/capsules", json={"template": "x"}, headers=ada.h)
    assert_error(resp, 400, "invalid_request")
    assert await _owner_file(api, bob, "x") == bob.email.encode()
    # Deleting it again is Ada's 404, not a reach into Bob's.
    assert_error(await api.delete("/v1/snapshots/x", headers=ada.h), 404, "not_found")
    assert stored[bob] in agent.templates


async def test_a_paused_capsule_resumes_with_its_own_teams_template(stack: Stack) -> None:
    """A resume takes the default user and environment from the capsule's template row, not
    from whichever template has that name."""
    api, agent = stack.client, stack.agent
    ada, bob = await new_account(api), await new_account(api)
    for who in (ada, bob):
        await _snapshot(api, who, who.email.encode())
    cid = (await make_capsule(api, ada, template="x"))["id"]
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=ada.h)).status_code == 200
    # Changed while it is paused: the resume hands the capsule its template's current ones.
    async with stack.db.sessionmaker() as session, session.begin():
        for who in (ada, bob):
            row = await session.scalar(
                select(Template).where(
                    Template.team_id == ids.TEAM.parse(who.team_id), Template.name == "x"
                )
            )
            assert row is not None
            row.default_env = {"OWNER": who.email}
    assert (await api.post(f"/v1/capsules/{cid}/resume", headers=ada.h)).status_code == 200
    assert agent.sandboxes[cid].default_env == {"OWNER": ada.email}


async def test_platform_names_and_a_platform_template_named_after_a_teams(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    root = await new_admin(api, stack.db)
    ada, dan, carol = await new_account(api), await new_account(api), await new_account(api)

    # A platform template's name is no team's to take.
    cid = (await make_capsule(api, ada))["id"]
    resp = await api.post(
        "/v1/snapshots", json={"sandbox_id": cid, "name": "minimal"}, headers=ada.h
    )
    assert_error(resp, 409, "name_reserved")

    # An admin deleting a name several teams have says whose.
    await _snapshot(api, ada, b"ada")
    await _snapshot(api, dan, b"dan")
    dans = await _stored(stack, dan.team_id)
    assert_error(await api.delete("/v1/admin/templates/x", headers=root.jwt), 409, "conflict")
    resp = await api.delete(
        "/v1/admin/templates/x", params={"team_id": dan.team_id}, headers=root.jwt
    )
    assert resp.status_code == 204, resp.text
    assert dans not in agent.templates and await _stored(stack, ada.team_id) in agent.templates
    assert await _listed(api, dan) == [("minimal", True)]

    # The platform then names a template x too (its files under the name itself).
    made = await api.post(ADMIN, json={}, headers=root.jwt)
    assert made.status_code == 201, made.text
    pid = made.json()["id"]
    await _write(api, root.jwt, pid, b"platform", at=ADMIN)
    resp = await api.post(f"{ADMIN}/{pid}/snapshot", json={"name": "x"}, headers=root.jwt)
    assert resp.status_code == 201, resp.text
    assert resp.json()["platform"] is True
    assert await _stored(stack, PLATFORM) == "x" and "x" in agent.templates

    # Ada's x still means hers; other teams get the platform's.
    assert await _owner_file(api, ada, "x") == b"ada"
    assert await _owner_file(api, carol, "x") == b"platform"
    assert await _listed(api, ada) == [("minimal", True), ("x", False), ("x", True)]
    assert await _listed(api, carol) == [("minimal", True), ("x", True)]
    # Now x is reserved for teams that do not have one.
    cid = (await make_capsule(api, carol))["id"]
    resp = await api.post("/v1/snapshots", json={"sandbox_id": cid, "name": "x"}, headers=carol.h)
    assert_error(resp, 409, "name_reserved")
    # Ada's delete takes her own; she may not delete the platform's.
    adas = await _stored(stack, ada.team_id)
    assert (await api.delete("/v1/snapshots/x", headers=ada.h)).status_code == 204
    assert adas not in agent.templates
    assert_error(await api.delete("/v1/snapshots/x", headers=ada.h), 403, "forbidden")
    assert "x" in agent.templates
    assert await _owner_file(api, ada, "x") == b"platform"
    # Only the platform's has the name now: the admin need not say whose.
    assert (await api.delete("/v1/admin/templates/x", headers=root.jwt)).status_code == 204
    assert "x" not in agent.templates
    assert_error(await api.delete("/v1/admin/templates/x", headers=root.jwt), 404, "not_found")


async def test_a_build_starts_from_a_platform_template_only(stack: Stack) -> None:
    api = stack.client
    root = await new_admin(api, stack.db)
    ada = await new_account(api)
    await _snapshot(api, ada, b"ada")
    body = {"name": "built", "recipe": ["RUN true"], "base_template": "x"}
    resp = await api.post("/v1/admin/builds", json=body, headers=root.jwt)
    assert_error(resp, 400, "invalid_request")

    # A platform build may be named like a team's template: that one stays the team's.
    body = {"name": "x", "recipe": ["RUN true"]}
    resp = await api.post("/v1/admin/builds", json=body, headers=root.jwt)
    assert resp.status_code == 201, resp.text
    build_id = resp.json()["id"]

    async def done() -> str | None:
        got = await api.get(f"/v1/admin/builds/{build_id}", headers=root.jwt)
        status: str = got.json()["status"]
        return status if status in ("success", "failed") else None

    assert await wait_for(done, 30, what="the build's end") == "success"
    assert await _stored(stack, PLATFORM) == "x"
    assert await _owner_file(api, ada, "x") == b"ada"
    # A second build of that name is refused: the platform's x exists.
    resp = await api.post("/v1/admin/builds", json=body, headers=root.jwt)
    assert_error(resp, 409, "template_name_taken")


async def test_a_name_taken_while_the_agent_snapshots_leaves_no_files(stack: Stack) -> None:
    """The name is checked again once the agent has made the files: taken meanwhile (by the
    team, or by the platform), the request is refused and its files deleted."""
    api, agent = stack.client, stack.agent
    ada = await new_account(api)
    team = ids.TEAM.parse(ada.team_id)
    for name, owner, code in (
        ("raced", team, "template_name_taken"),
        ("raced-platform", ids.PLATFORM_TEAM_ID, "name_reserved"),
    ):
        cid = (await make_capsule(api, ada))["id"]
        before = set(agent.templates)
        hold = agent.faults.hold_reply("CreateSnapshot")
        request = asyncio.create_task(
            api.post("/v1/snapshots", json={"sandbox_id": cid, "name": name}, headers=ada.h)
        )
        await asyncio.wait_for(hold.arrived.wait(), 10)
        made = set(agent.templates) - before
        assert len(made) == 1 and next(iter(made)).startswith(f"{name}.")
        async with stack.db.sessionmaker() as session, session.begin():
            session.add(
                Template(name=name, storage_name=f"{name}-theirs", team_id=owner, type="base")
            )
        hold.release()
        assert_error(await request, 409, code)
        agent.faults.clear()
        assert set(agent.templates) == before
        async with stack.db.sessionmaker() as session:
            rows = list(await session.scalars(select(Template).where(Template.name == name)))
        assert [(r.team_id, r.storage_name) for r in rows] == [(owner, f"{name}-theirs")]
