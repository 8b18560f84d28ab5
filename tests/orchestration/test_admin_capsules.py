"""Platform capsules over the fake host agent: a platform admin creates a capsule in the platform
team under `/v1/admin/capsules`, runs commands and writes files in it, and snapshots it into a
platform template that every team can start from. Nobody else reaches these routes, and they
reach no team's capsule."""

from __future__ import annotations

from wrenn_server.controlplane import ids

from ..controlplane.helpers import assert_error
from .conftest import Stack
from .helpers import make_capsule, new_account, new_admin
from .test_streams import closed_with, collect, next_json, open_ws, refused

ADMIN = "/v1/admin/capsules"
PLATFORM = ids.TEAM.format(ids.PLATFORM_TEAM_ID)


async def test_platform_capsules_make_platform_templates(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    root = await new_admin(api, stack.db)
    alice = await new_account(api)
    alices = (await make_capsule(api, alice))["id"]

    # Only a platform admin's session: not a team's owner, nor an API key (the admin's either).
    for headers, status in ((alice.jwt, 403), (alice.h, 401), (root.h, 401), ({}, 401)):
        resp = await api.post(ADMIN, json={}, headers=headers)
        assert resp.status_code == status, resp.text
    assert len(agent.sandboxes) == 1

    resp = await api.post(ADMIN, json={}, headers=root.jwt)
    assert resp.status_code == 201, resp.text
    cid = resp.json()["id"]
    assert agent.sandboxes[cid].status == "running"
    listed = await api.get(ADMIN, params={"team_id": PLATFORM}, headers=root.jwt)
    assert [c["id"] for c in listed.json()] == [cid]
    # It is the platform team's: not the admin's own team's, nor anyone else's.
    assert_error(await api.get(f"/v1/capsules/{cid}", headers=root.jwt), 404, "not_found")
    assert_error(await api.get(f"/v1/capsules/{cid}", headers=alice.h), 404, "not_found")
    # And the admin routes reach no team's capsule.
    resp = await api.post(f"{ADMIN}/{alices}/exec", json={"cmd": "true"}, headers=root.jwt)
    assert_error(resp, 404, "not_found")
    assert_error(await api.delete(f"{ADMIN}/{alices}", headers=root.jwt), 404, "not_found")
    resp = await api.post(f"{ADMIN}/{cid}/exec", json={"cmd": "true"}, headers=alice.jwt)
    assert_error(resp, 403, "forbidden")

    ran = await api.post(f"{ADMIN}/{cid}/exec", json={"cmd": "echo prepared"}, headers=root.jwt)
    assert ran.status_code == 200, ran.text
    assert (ran.json()["stdout"], ran.json()["exit_code"]) == ("prepared\n", 0)
    wrote = await api.post(
        f"{ADMIN}/{cid}/files/write",
        data={"path": "/opt/tool.sh"},
        files={"file": ("tool.sh", b"echo tool", "application/octet-stream")},
        headers=root.jwt,
    )
    assert wrote.status_code == 204, wrote.text
    read = await api.post(
        f"{ADMIN}/{cid}/files/read", json={"path": "/opt/tool.sh"}, headers=root.jwt
    )
    assert read.status_code == 200 and read.content == b"echo tool"
    got = await api.get(f"{ADMIN}/{cid}", headers=root.jwt)
    assert got.status_code == 200 and got.json()["status"] == "running"

    # The base template cannot be replaced; a bad name is refused.
    resp = await api.post(f"{ADMIN}/{cid}/snapshot", json={"name": "minimal"}, headers=root.jwt)
    assert_error(resp, 409, "conflict")
    resp = await api.post(f"{ADMIN}/{cid}/snapshot", json={"name": "../x"}, headers=root.jwt)
    assert_error(resp, 400, "invalid_request")
    resp = await api.post(f"{ADMIN}/{cid}/snapshot", json={"name": "tools"}, headers=root.jwt)
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "tools"
    assert "tools" in agent.templates

    # Every team sees the platform template and starts capsules from it.
    names = [t["name"] for t in (await api.get("/v1/snapshots", headers=alice.h)).json()]
    assert "tools" in names
    from_it = await make_capsule(api, alice, template="tools")
    assert agent.sandboxes[from_it["id"]].template == "tools"

    gone = await api.delete(f"{ADMIN}/{cid}", headers=root.jwt)
    assert gone.status_code == 204, gone.text
    assert cid not in agent.sandboxes
    listed = await api.get(ADMIN, params={"team_id": PLATFORM}, headers=root.jwt)
    assert [(c["id"], c["status"]) for c in listed.json()] == [(cid, "stopped")]


async def test_platform_capsule_streams(stack: Stack) -> None:
    """The exec stream of a platform capsule, for a platform admin only; the streams reach no
    team's capsule."""
    api = stack.client
    root = await new_admin(api, stack.db)
    alice = await new_account(api)
    alices = (await make_capsule(api, alice))["id"]
    resp = await api.post(ADMIN, json={}, headers=root.jwt)
    assert resp.status_code == 201, resp.text
    url = f"{ADMIN}/{resp.json()['id']}/exec/stream"

    async with open_ws(stack, url, root.jwt) as ws:
        await ws.send_json({"type": "start", "cmd": "echo platform"})
        msgs, out, _ = await collect(ws)
        assert await closed_with(ws) == 1000
    assert out == "platform\n" and msgs[-1] == {"type": "exit", "exit_code": 0}

    # An API key (the admin's too) is no platform admin's session: the upgrade is refused.
    for headers in (root.h, alice.h):
        assert_error(await refused(stack, url, headers), 401, "unauthorized")
    # A user who is no platform admin is told on the socket, as any stream that cannot start.
    async with open_ws(stack, url, alice.jwt) as ws:
        await ws.send_json({"type": "start", "cmd": "true"})
        msg, code = await next_json(ws), await closed_with(ws)
    assert (msg, code) == ({"type": "error", "data": "this needs a platform admin"}, 1008)
    async with open_ws(stack, f"{ADMIN}/{alices}/exec/stream", root.jwt) as ws:
        await ws.send_json({"type": "start", "cmd": "true"})
        msg, code = await next_json(ws), await closed_with(ws)
    assert (msg, code) == ({"type": "error", "data": "capsule not found"}, 1008)
    # The first-message authentication of browsers works the same way.
    async with open_ws(stack, url, {}) as ws:
        await ws.send_json({"type": "auth", "token": root.token})
        await ws.send_json({"type": "start", "cmd": "echo again"})
        _, out, _ = await collect(ws)
    assert out == "again\n"
