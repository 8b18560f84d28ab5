"""The E2B control API with the stock `e2b` SDK (AsyncSandbox, against the app behind a real
uvicorn with the fake agent as its host) and with httpx where the SDK hides the answer: a
sandbox made through it is a Wrenn capsule and the reverse; E2B's lifecycle (killed at its end,
or paused with autoPause); list filters and pages; metrics; snapshots; E2B's error body only on
E2B's paths, with the SDK's exceptions."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from e2b import AsyncSandbox, SandboxQuery, SandboxState
from e2b.exceptions import (
    AuthenticationException,
    NotFoundException,
    RateLimitException,
)

from wrenn_server.controlplane.security import TokenCodec

from ..controlplane.conftest import TEST_JWT_SECRET
from ..controlplane.helpers import assert_error
from ..served import served as serving
from ..waiting import wait_for
from .conftest import Stack, StartApp
from .helpers import Account, capsule_status, make_capsule, new_account


def sdk(url: str, account: Account) -> dict[str, Any]:
    """The SDK's connection options for this server: what E2B_API_URL, E2B_API_KEY and
    E2B_SANDBOX_URL set."""
    return {"api_url": url, "api_key": account.key, "sandbox_url": url}


def e2b_error(resp: httpx.Response, status: int) -> str:
    """E2B's error body, exactly: {"code": <status>, "message": ...}; returns the message."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"code", "message"} and body["code"] == status, body
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


@pytest.fixture
async def served(start_app: StartApp) -> AsyncIterator[tuple[Stack, str]]:
    async with start_app(e2b_lifecycle_interval_sec=0.1) as stack, serving(stack.app) as url:
        yield stack, url


async def test_a_sandbox_made_through_e2b_is_a_wrenn_capsule(served: tuple[Stack, str]) -> None:
    stack, url = served
    account = await new_account(stack.client)
    sbx = await AsyncSandbox.create(
        "base", timeout=120, metadata={"owner": "ci"}, envs={"GREETING": "hi"}, **sdk(url, account)
    )
    wire_id = sbx.sandbox_id
    assert wire_id.startswith("sb-")
    # Every sandbox is reached with an access token naming it and its team.
    codec = TokenCodec(TEST_JWT_SECRET, dt.timedelta(hours=1))
    assert sbx._envd_access_token is not None
    assert codec.verify_e2b_access(sbx._envd_access_token, "envd")[0] == wire_id
    assert sbx.traffic_access_token is not None
    assert codec.verify_e2b_access(sbx.traffic_access_token, "traffic")[0] == wire_id
    # Wrenn's API sees it: its base template, its labels, running; its envVars reached the host.
    capsule = (await stack.client.get(f"/v1/capsules/{wire_id}", headers=account.h)).json()
    assert capsule["status"] == "running" and capsule["template"] == "minimal"
    assert capsule["metadata"]["owner"] == "ci"
    assert stack.agent.sandboxes[wire_id].default_env["GREETING"] == "hi"
    listed = (await stack.client.get("/v1/capsules", headers=account.h)).json()
    assert wire_id in [c["id"] for c in listed]
    audit = (await stack.client.get("/v1/audit-logs", headers=account.jwt)).json()
    assert any(e["resource_id"] == wire_id and e["action"] == "create" for e in audit["items"])

    info = await AsyncSandbox.get_info(wire_id, **sdk(url, account))
    assert info.state == SandboxState.RUNNING and info.metadata["owner"] == "ci"
    assert info.template_id == "minimal" and info.cpu_count == 1 and info.memory_mb == 512
    assert dt.timedelta(seconds=100) < info.end_at - info.started_at <= dt.timedelta(seconds=121)

    assert await AsyncSandbox.kill(wire_id, **sdk(url, account)) is True
    assert await capsule_status(stack.client, account, wire_id) == "stopped"
    assert await AsyncSandbox.kill(wire_id, **sdk(url, account)) is False
    with pytest.raises(NotFoundException):
        await AsyncSandbox.get_info(wire_id, **sdk(url, account))


async def test_errors_are_e2b_bodies_on_e2b_paths_and_wrenn_bodies_elsewhere(
    served: tuple[Stack, str],
) -> None:
    stack, url = served
    client = stack.client
    owner, other = await new_account(client), await new_account(client)
    sbx = await AsyncSandbox.create("base", **sdk(url, owner))
    path = f"/sandboxes/{sbx.sandbox_id}"
    # No key, a wrong key: 401, and the SDK's AuthenticationException.
    e2b_error(await client.get(path), 401)
    e2b_error(await client.get(path, headers={"X-API-KEY": "wrn_" + "0" * 64}), 401)
    with pytest.raises(AuthenticationException):
        await AsyncSandbox.create("base", **{**sdk(url, owner), "api_key": "wrn_" + "1" * 64})
    # Another team's sandbox does not exist for this one, whatever the call.
    h = {"X-API-KEY": other.key}
    e2b_error(await client.get(path, headers=h), 404)
    e2b_error(await client.delete(path, headers=h), 404)
    e2b_error(await client.post(f"{path}/timeout", json={"timeout": 5}, headers=h), 404)
    e2b_error(await client.post(f"{path}/pause", headers=h), 404)
    e2b_error(await client.post(f"/v2{path}/connect", json={}, headers=h), 404)
    e2b_error(await client.get(f"{path}/metrics", headers=h), 404)
    e2b_error(await client.post(f"{path}/snapshots", json={}, headers=h), 404)
    with pytest.raises(NotFoundException):
        await AsyncSandbox.get_info(sbx.sandbox_id, **sdk(url, other))
    with pytest.raises(NotFoundException):
        await AsyncSandbox.connect(sbx.sandbox_id, **sdk(url, other))
    assert await AsyncSandbox.kill(sbx.sandbox_id, **sdk(url, other)) is False
    assert await capsule_status(client, owner, sbx.sandbox_id) == "running"
    # Bad bodies and ids: 400 / 404, never a 500.
    k = {"X-API-KEY": owner.key}
    e2b_error(await client.post("/v2/sandboxes", json={}, headers=k), 400)
    e2b_error(
        await client.post("/v2/sandboxes", json={"templateID": "base", "timeout": -1}, headers=k),
        400,
    )
    e2b_error(await client.post("/v2/sandboxes", json={"templateID": "nope"}, headers=k), 400)
    e2b_error(await client.post("/v2/sandboxes", content=b"{", headers=k), 400)
    e2b_error(await client.post(f"{path}/timeout", json={}, headers=k), 400)
    e2b_error(await client.get("/sandboxes/sb-nope", headers=k), 404)
    e2b_error(await client.get("/sandboxes/x/y/z", headers=k), 404)
    e2b_error(await client.get("/v2/sandboxes?state=dead", headers=k), 400)
    e2b_error(await client.get("/v2/sandboxes?nextToken=bogus", headers=k), 400)
    # What Wrenn cannot give is refused, not ignored.
    for extra in (
        {"allow_internet_access": False},
        {"volumeMounts": [{"name": "v", "path": "/data"}]},
        {"mcp": {"server": {}}},
    ):
        body = {"templateID": "base", **extra}
        assert "not supported" in e2b_error(
            await client.post("/v2/sandboxes", json=body, headers=k), 400
        )
    # Wrenn's own paths keep Wrenn's body.
    assert_error(await client.get("/v1/capsules/sb-nope", headers=owner.h), 404, "not_found")
    assert_error(await client.get("/v1/capsules"), 401, "unauthorized")
    # A member's JWT is a credential here too.
    resp = await client.get(path, headers=owner.jwt)
    assert resp.status_code == 200 and resp.json()["sandboxID"] == sbx.sandbox_id
    # Nothing half-made was left by the refusals: the team still has its one capsule.
    listed = (await client.get("/v1/capsules", headers=owner.h)).json()
    assert [c["id"] for c in listed] == [sbx.sandbox_id]


async def test_the_team_quota_is_e2b_rate_limit(start_app: StartApp) -> None:
    async with start_app(quota_max_capsules=1) as stack, serving(stack.app) as url:
        account = await new_account(stack.client)
        await make_capsule(stack.client, account)  # through Wrenn's API: the same quota
        with pytest.raises(RateLimitException):
            await AsyncSandbox.create("base", **sdk(url, account))
        resp = await stack.client.post(
            "/v2/sandboxes", json={"templateID": "base"}, headers={"X-API-KEY": account.key}
        )
        e2b_error(resp, 429)


async def test_pause_connect_and_the_e2b_lifecycle(served: tuple[Stack, str]) -> None:
    stack, url = served
    account = await new_account(stack.client)
    opts = sdk(url, account)
    sbx = await AsyncSandbox.create("base", timeout=300, envs={"A": "1"}, **opts)
    wire_id = sbx.sandbox_id
    assert await sbx.pause() is True
    assert await capsule_status(stack.client, account, wire_id) == "paused"
    assert (await AsyncSandbox.get_info(wire_id, **opts)).state == SandboxState.PAUSED
    assert await sbx.pause() is False  # already paused: E2B's 409
    # connect resumes a paused sandbox (201), with its envVars; a running one is just reached.
    resp = await stack.client.post(
        f"/v2/sandboxes/{wire_id}/connect", json={"timeout": 60}, headers={"X-API-KEY": account.key}
    )
    assert resp.status_code == 201 and resp.json()["envdAccessToken"]
    assert await capsule_status(stack.client, account, wire_id) == "running"
    assert stack.agent.sandboxes[wire_id].default_env["A"] == "1"
    again = await AsyncSandbox.connect(wire_id, **opts)
    assert again.sandbox_id == wire_id
    # The older resume call refuses a running sandbox.
    e2b_error(
        await stack.client.post(
            f"/sandboxes/{wire_id}/resume", json={}, headers={"X-API-KEY": account.key}
        ),
        409,
    )
    # set_timeout: the end moves (sooner too); at its end the sandbox is killed.
    await sbx.set_timeout(3600)
    info = await AsyncSandbox.get_info(wire_id, **opts)
    assert info.end_at - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=59)
    await sbx.set_timeout(1)

    async def stopped() -> bool:
        return await capsule_status(stack.client, account, wire_id) == "stopped"

    await wait_for(stopped, 15, what="killed at its E2B end")
    # With autoPause, the end pauses it instead; refreshes keep it alive meanwhile.
    keep = await AsyncSandbox.create("base", timeout=30, lifecycle={"on_timeout": "pause"}, **opts)
    for duration in (120, 5):  # a refresh never brings the end closer
        resp = await stack.client.post(
            f"/sandboxes/{keep.sandbox_id}/refreshes",
            json={"duration": duration},
            headers={"X-API-KEY": account.key},
        )
        assert resp.status_code == 204
        info = await AsyncSandbox.get_info(keep.sandbox_id, **opts)
        assert info.end_at - dt.datetime.now(dt.UTC) > dt.timedelta(seconds=100)
    await keep.set_timeout(1)

    async def paused() -> bool:
        return await capsule_status(stack.client, account, keep.sandbox_id) == "paused"

    await wait_for(paused, 15, what="paused at its E2B end")
    resp = await stack.client.get(
        f"/sandboxes/{keep.sandbox_id}", headers={"X-API-KEY": account.key}
    )
    assert resp.json()["lifecycle"] == {"onTimeout": "pause", "autoResume": False}
    # A paused sandbox is not killed by its old end; connect brings it back.
    await AsyncSandbox.connect(keep.sandbox_id, timeout=60, **opts)
    assert await capsule_status(stack.client, account, keep.sandbox_id) == "running"


async def test_list_filters_and_pages(served: tuple[Stack, str]) -> None:
    stack, url = served
    account = await new_account(stack.client)
    opts = sdk(url, account)
    made = [
        await AsyncSandbox.create("base", metadata={"run": "a" if i < 2 else "b"}, **opts)
        for i in range(3)
    ]
    await made[0].pause()
    ids_ = [s.sandbox_id for s in made]

    async def listed(**kwargs: Any) -> list[str]:
        paginator = AsyncSandbox.list(**kwargs, **opts)
        found: list[str] = []
        while paginator.has_next:
            found += [s.sandbox_id for s in await paginator.next_items()]
        return found

    assert await listed() == ids_[::-1]  # newest first, running and paused
    assert await listed(query=SandboxQuery(state=[SandboxState.RUNNING])) == ids_[:0:-1]
    assert await listed(query=SandboxQuery(state=[SandboxState.PAUSED])) == ids_[:1]
    assert await listed(query=SandboxQuery(metadata={"run": "a"})) == ids_[1::-1]
    assert await listed(limit=2) == ids_[::-1]  # two pages
    paginator = AsyncSandbox.list(limit=2, **opts)
    assert len(await paginator.next_items()) == 2 and paginator.has_next
    assert len(await paginator.next_items()) == 1 and not paginator.has_next
    resp = await stack.client.get("/v2/sandboxes?limit=1", headers={"X-API-KEY": account.key})
    assert resp.headers["x-next-token"] and len(resp.json()) == 1
    # v1 lists the running ones.
    resp = await stack.client.get("/sandboxes", headers={"X-API-KEY": account.key})
    assert sorted(s["sandboxID"] for s in resp.json()) == sorted(ids_[1:])
    # A capsule made through Wrenn's API is an E2B sandbox too.
    wrenn = await make_capsule(stack.client, account, timeout_sec=600)
    assert wrenn["id"] in await listed()
    info = await AsyncSandbox.get_info(wrenn["id"], **opts)
    assert info.state == SandboxState.RUNNING and info.template_id == "minimal"
    assert (await AsyncSandbox.connect(wrenn["id"], **opts)).sandbox_id == wrenn["id"]


async def test_metrics(served: tuple[Stack, str]) -> None:
    stack, url = served
    account = await new_account(stack.client)
    sbx = await AsyncSandbox.create("base", **sdk(url, account))
    found = await sbx.get_metrics()
    assert found and found[-1].cpu_count == 1 and found[-1].mem_total == 512 << 20
    assert found[-1].disk_total == 5120 << 20 and found[-1].mem_used > 0
    resp = await stack.client.get(
        f"/sandboxes/metrics?sandbox_ids={sbx.sandbox_id},sb-nope",
        headers={"X-API-KEY": account.key},
    )
    assert resp.status_code == 200, resp.text
    assert list(resp.json()["sandboxes"]) == [sbx.sandbox_id]
    assert resp.json()["sandboxes"][sbx.sandbox_id]["cpuCount"] == 1


async def test_snapshots(served: tuple[Stack, str]) -> None:
    stack, url = served
    account, other = await new_account(stack.client), await new_account(stack.client)
    opts = sdk(url, account)
    sbx = await AsyncSandbox.create("base", **opts)
    snap = await sbx.create_snapshot()
    assert snap.snapshot_id and snap.names == [snap.snapshot_id]
    # It ran on (Wrenn's snapshot pauses; E2B's does not).
    assert await capsule_status(stack.client, account, sbx.sandbox_id) == "running"

    async def snapshot_ids(**kwargs: Any) -> list[str]:
        paginator = AsyncSandbox.list_snapshots(**kwargs, **opts)
        found: list[str] = []
        while paginator.has_next:
            found += [s.snapshot_id for s in await paginator.next_items()]
        return found

    assert await snapshot_ids() == [snap.snapshot_id]
    assert await snapshot_ids(sandbox_id=sbx.sandbox_id) == [snap.snapshot_id]
    other_sbx = await AsyncSandbox.create("base", **opts)
    assert await snapshot_ids(sandbox_id=other_sbx.sandbox_id) == []
    # A new sandbox starts from it; Wrenn sees a snapshot template.
    child = await AsyncSandbox.create(snap.snapshot_id, **opts)
    assert (await AsyncSandbox.get_info(child.sandbox_id, **opts)).template_id == snap.snapshot_id
    templates = (await stack.client.get("/v1/snapshots", headers=account.h)).json()
    assert any(t["name"] == snap.snapshot_id and t["type"] == "snapshot" for t in templates)
    # Another team neither sees nor deletes it; its owner does, once.
    assert await AsyncSandbox.delete_snapshot(snap.snapshot_id, **sdk(url, other)) is False
    assert await AsyncSandbox.delete_snapshot("minimal", **opts) is False  # not a snapshot
    assert await AsyncSandbox.delete_snapshot(snap.snapshot_id, **opts) is True
    assert await AsyncSandbox.delete_snapshot(snap.snapshot_id, **opts) is False
    assert await snapshot_ids() == []
    named = await sbx.create_snapshot(name="my-snap")
    assert named.snapshot_id == "my-snap"


async def test_the_older_calls_and_snapshot_pages(served: tuple[Stack, str]) -> None:
    """The v1 create and connect, the older resume, and snapshot pages, with plain HTTP."""
    stack, _url = served
    account = await new_account(stack.client)
    k = {"X-API-KEY": account.key}
    client = stack.client
    resp = await client.post(
        "/sandboxes",
        json={"templateID": "base", "timeout": 60, "secure": False, "metadata": {"v": "1"}},
        headers=k,
    )
    assert resp.status_code == 201, resp.text
    made = resp.json()
    wire_id = made["sandboxID"]
    # Secure whatever was asked: a token every time.
    assert made["envdAccessToken"] and made["trafficAccessToken"] and made["clientID"]
    assert made["envdVersion"] == "0.6.4" and made["templateID"] == "minimal"
    resp = await client.post(f"/sandboxes/{wire_id}/connect", json={"timeout": 60}, headers=k)
    assert resp.status_code == 200 and resp.json()["sandboxID"] == wire_id
    assert (await client.post(f"/sandboxes/{wire_id}/pause", headers=k)).status_code == 204
    e2b_error(await client.post(f"/sandboxes/{wire_id}/pause", headers=k), 409)
    resp = await client.post(
        f"/sandboxes/{wire_id}/resume", json={"timeout": 60, "autoPause": True}, headers=k
    )
    assert resp.status_code == 201, resp.text
    detail = (await client.get(f"/sandboxes/{wire_id}", headers=k)).json()
    assert detail["state"] == "running" and detail["lifecycle"]["onTimeout"] == "pause"
    assert detail["metadata"]["v"] == "1"
    # Snapshot names: given, taken (409), paged.
    for name in ("snap-a", "snap-b", "snap-c"):
        resp = await client.post(f"/sandboxes/{wire_id}/snapshots", json={"name": name}, headers=k)
        assert resp.status_code == 201 and resp.json() == {"snapshotID": name, "names": [name]}
    e2b_error(
        await client.post(f"/sandboxes/{wire_id}/snapshots", json={"name": "snap-a"}, headers=k),
        409,
    )
    first = await client.get("/snapshots?limit=2", headers=k)
    assert len(first.json()) == 2 and first.headers["x-next-token"]
    rest = await client.get(
        "/snapshots", params={"limit": 2, "nextToken": first.headers["x-next-token"]}, headers=k
    )
    assert "x-next-token" not in rest.headers
    names = [s["snapshotID"] for s in first.json() + rest.json()]
    assert sorted(names) == ["snap-a", "snap-b", "snap-c"]
    e2b_error(await client.get("/snapshots?nextToken=nope", headers=k), 400)
    e2b_error(await client.delete("/templates/minimal", headers=k), 404)


async def test_connects_arriving_together_all_reach_the_resumed_sandbox(
    served: tuple[Stack, str],
) -> None:
    stack, url = served
    account = await new_account(stack.client)
    opts = sdk(url, account)
    sbx = await AsyncSandbox.create("base", **opts)
    assert await sbx.pause() is True
    together = await asyncio.gather(
        *(AsyncSandbox.connect(sbx.sandbox_id, timeout=60, **opts) for _ in range(4))
    )
    assert {s.sandbox_id for s in together} == {sbx.sandbox_id}
    assert await capsule_status(stack.client, account, sbx.sandbox_id) == "running"
