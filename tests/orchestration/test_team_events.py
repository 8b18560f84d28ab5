"""Team events beyond capsules on the live stream: a team's template builds (created, started,
finished with success or failure; only on streams that ask for them, since the published SDK
rejects kinds it does not know) and its own BYOC hosts (`host.up` when registered or back online,
`host.down` when unreachable or removed), on that team's stream and not on another's. Capsule
events carry the capsule in `sandbox`."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
from sqlalchemy import update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models.hosts import Host
from wrenn_server.controlplane.db.session import transaction
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.services import host_liveness
from wrenn_server.hostagent import tls

from ..waiting import wait_for
from .conftest import StartApp
from .helpers import Account, make_capsule, new_account, new_admin
from .test_channels import LOOPBACK, Receiver, receiver  # noqa: F401 (a fixture)
from .test_events import Frame, Stream, served, stream


async def _frames(events: Stream, resource_id: str, count: int) -> list[Frame]:
    out: list[Frame] = []
    while len(out) < count:
        frame = await events.next()
        assert frame is not None, "the stream ended"
        if frame.data.get("resource", {}).get("id") == resource_id:
            out.append(frame)
    return out


async def _first_is_own_capsule(
    client: httpx.AsyncClient, account: Account, events: Stream
) -> None:
    """The next frame of `events` is about a capsule made now: nothing else came before."""
    capsule = await make_capsule(client, account)
    frame = await events.next()
    assert frame is not None
    assert (frame.data["event"], frame.data["resource"]["id"]) == ("capsule.create", capsule["id"])


async def _build(client: httpx.AsyncClient, admin: Account, name: str, recipe: list[str]) -> str:
    resp = await client.post(
        "/v1/admin/builds", json={"name": name, "recipe": recipe}, headers=admin.jwt
    )
    assert resp.status_code == 201, resp.text
    build_id: str = resp.json()["id"]
    return build_id


async def _enable_byoc(api: httpx.AsyncClient, root: Account, team: Account) -> None:
    resp = await api.put(
        f"/v1/admin/teams/{team.team_id}/byoc", json={"enabled": True}, headers=root.jwt
    )
    assert resp.status_code == 204, resp.text


async def _byoc_host(api: httpx.AsyncClient, owner: Account) -> tuple[str, str]:
    """A host of `owner`'s team, registered at a loopback address: its id and host token."""
    resp = await api.post(
        "/v1/hosts", json={"type": "byoc", "team_id": owner.team_id}, headers=owner.jwt
    )
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    resp = await api.post(
        "/v1/hosts/register",
        json={
            "token": created["registration_token"],
            "address": "127.0.0.1:1",
            "tls_certificate": tls.generate().cert_pem.decode(),
        },
    )
    assert resp.status_code == 201, resp.text
    return created["host"]["id"], resp.json()["token"]


async def test_build_events_reach_the_submitting_team_that_asks_for_them(
    start_app: StartApp,
) -> None:
    async with start_app() as stack, served(stack.app) as url:
        api = stack.client
        ada = await new_admin(api, stack.db)
        bob = await new_account(api)
        builds = "/v1/events/stream?kinds=template.build"
        resp = await api.get("/v1/events/stream?kinds=template.nothing", headers=ada.h)
        assert resp.status_code == 400, resp.text
        assert "unknown event kind" in resp.json()["error"]["message"]
        async with (
            stream(url, ada.h, builds) as ada_builds,
            stream(url, ada.h) as ada_default,
            stream(url, bob.h, "/v1/events?kinds=template.build,capsule") as bobs,
        ):
            good = await _build(api, ada, "events-good", ["RUN true"])
            created, started, finished = await _frames(ada_builds, good, 3)
            assert [f.event for f in (created, started, finished)] == [
                "template.build.create",
                "template.build.start",
                "template.build.finish",
            ]
            assert created.data["resource"] == {"id": good, "type": "build"}
            assert created.data["actor"]["type"] == "user"
            assert created.data["metadata"]["template"] == "events-good"
            assert started.data["actor"]["type"] == "system"
            assert finished.data["outcome"] == "success"
            assert finished.data["metadata"]["to"] == "success"

            bad = await _build(api, ada, "events-bad", ["RUN false"])
            *_, failed = await _frames(ada_builds, bad, 3)
            assert failed.data["event"] == "template.build.finish"
            assert failed.data["outcome"] == "error"
            assert failed.data["error"].endswith("(RUN false) exited with 1")
            assert failed.data["metadata"]["to"] == "failed"

            # Not on Ada's default stream (the SDK's kinds), nor on Bob's.
            await _first_is_own_capsule(api, ada, ada_default)
            await _first_is_own_capsule(api, bob, bobs)


async def test_byoc_host_events_reach_the_hosts_team_only(start_app: StartApp) -> None:
    async with (
        start_app(byoc_allowed_networks=["127.0.0.0/8"]) as stack,
        served(stack.app) as url,
    ):
        api = stack.client
        root = await new_admin(api, stack.db)
        ada, bob = await new_account(api), await new_account(api)
        await _enable_byoc(api, root, ada)
        async with stream(url, ada.jwt) as ada_events, stream(url, bob.h) as bobs:
            host_id, host_token = await _byoc_host(api, ada)
            (registered,) = await _frames(ada_events, host_id, 1)

            # Not heard from: unreachable; heartbeats again: online; removed.
            byoc = ids.HOST.parse(host_id)
            async with stack.db.sessionmaker() as session, transaction(session, write=True):
                # Only the team's host goes quiet (the single box's stays seen).
                now = utcnow()
                long_ago = now - dt.timedelta(hours=1)
                await session.execute(update(Host).values(last_heartbeat_at=now))
                await session.execute(
                    update(Host).where(Host.id == byoc).values(last_heartbeat_at=long_ago)
                )
                down_hosts = await host_liveness.mark_stale_down(
                    session, down_after=dt.timedelta(seconds=90)
                )
                assert [h.id for h in down_hosts] == [byoc]
            resp = await api.post(
                f"/v1/hosts/{host_id}/heartbeat", headers={"X-Host-Token": host_token}
            )
            assert resp.status_code in (200, 204), resp.text
            resp = await api.delete(f"/v1/hosts/{host_id}", headers=ada.jwt)
            assert resp.status_code == 204, resp.text
            down, up, removed = await _frames(ada_events, host_id, 3)

            for frame, kind, to in [
                (registered, "host.up", "online"),
                (down, "host.down", "unreachable"),
                (up, "host.up", "online"),
                (removed, "host.down", "removed"),
            ]:
                assert (frame.event, frame.data["metadata"]["to"]) == (kind, to)
                assert frame.data["resource"] == {"id": host_id, "type": "host"}
                assert "outcome" not in frame.data  # the contract: none for host.up/down
            assert removed.data["actor"]["type"] == "user"

            await _first_is_own_capsule(api, bob, bobs)


async def test_capsule_events_carry_the_capsule(start_app: StartApp) -> None:
    async with start_app() as stack, served(stack.app) as url:
        ada = await new_account(stack.client)
        async with stream(url, ada.h) as events:
            capsule = await make_capsule(stack.client, ada)
            resp = await stack.client.post(f"/v1/capsules/{capsule['id']}/pause", headers=ada.h)
            assert resp.status_code == 200, resp.text
            created, paused = await _frames(events, capsule["id"], 2)
        assert created.data["sandbox"]["id"] == capsule["id"]
        assert created.data["sandbox"]["status"] == "running"
        assert created.data["sandbox"]["template"] == capsule["template"]
        assert paused.data["sandbox"]["status"] == "paused"


async def test_host_events_reach_a_channel_that_asked_for_them(
    start_app: StartApp,
    receiver: tuple[Receiver, str],  # noqa: F811 (the fixture imported above)
) -> None:
    rec, url = receiver
    settings = {"byoc_allowed_networks": LOOPBACK, "channel_delivery_interval_sec": 0.1}
    async with start_app(**settings) as stack:
        api = stack.client
        root = await new_admin(api, stack.db)
        ada = await new_account(api)
        await _enable_byoc(api, root, ada)
        body = {
            "name": "hosts",
            "provider": "webhook",
            "config": {"url": url + "/hook"},
            "events": ["host.up", "host.down"],
        }
        resp = await api.post("/v1/channels", json=body, headers=ada.h)
        assert resp.status_code == 201, resp.text
        await make_capsule(api, ada)  # not asked for: never sent
        host_id, _ = await _byoc_host(api, ada)
        resp = await api.delete(f"/v1/hosts/{host_id}", headers=ada.jwt)
        assert resp.status_code == 204, resp.text
        await wait_for(lambda: len(rec.received) >= 2, 20, what="two deliveries")
        sent = [json.loads(raw) for _, raw in rec.received]
        assert [(e["event"], e["resource"]["id"]) for e in sent] == [
            ("host.up", host_id),
            ("host.down", host_id),
        ]
