"""The live event stream (`GET /v1/events/stream`, `GET /v1/events`) over real HTTP (uvicorn),
with capsules made through the REST API over the fake host agent: events arrive, resume with
Last-Event-ID, stay within the team, cross between two app processes sharing one database,
heartbeats, the end of a stream on shutdown, and the published SDK's `events.stream()`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from wrenn_server.controlplane.services.event_hub import EventHub, Subscription

from ..published_sdk import published_sdk
from ..served import served
from ..waiting import wait_for
from .conftest import StartApp
from .helpers import Account, make_capsule, new_account

WAIT = 15.0


@dataclass
class Frame:
    id: int | None
    event: str
    data: dict[str, Any]


class Stream:
    """An open SSE response, read frame by frame."""

    def __init__(self, resp: httpx.Response) -> None:
        self.resp = resp
        self.lines = resp.aiter_lines()
        self.comments: list[str] = []

    async def next(self) -> Frame | None:
        """The next frame (comments are kept aside), None when the stream ended."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(WAIT):
            async for line in self.lines:
                if line == "":
                    if fields:
                        raw_id = fields.get("id")
                        return Frame(
                            int(raw_id) if raw_id else None,
                            fields["event"],
                            json.loads(fields["data"]),
                        )
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.lstrip()
        return None

    async def capsule_events(self, capsule_id: str, count: int) -> list[Frame]:
        """The next `count` frames about this capsule (others are skipped)."""
        out: list[Frame] = []
        while len(out) < count:
            frame = await self.next()
            assert frame is not None, "the stream ended"
            if frame.data.get("resource", {}).get("id") == capsule_id:
                out.append(frame)
        return out


@contextlib.asynccontextmanager
async def stream(
    base_url: str, headers: dict[str, str], path: str = "/v1/events/stream"
) -> AsyncIterator[Stream]:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=WAIT) as client,
        client.stream("GET", path, headers=headers) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")
        opened = Stream(resp)
        first = await opened.next()
        assert first is not None and first.event == "connected" and first.id is None
        yield opened


async def test_events_of_a_capsule_arrive_for_its_team_only(start_app: StartApp) -> None:
    async with start_app() as stack, served(stack.app, force_exit=True) as url:
        ada, bob = await new_account(stack.client), await new_account(stack.client)
        async with stream(url, ada.h) as ada_events, stream(url, bob.jwt, "/v1/events") as bobs:
            capsule = await make_capsule(stack.client, ada)
            resp = await stack.client.post(f"/v1/capsules/{capsule['id']}/pause", headers=ada.h)
            assert resp.status_code == 200, resp.text
            created, paused = await ada_events.capsule_events(capsule["id"], 2)
            assert created.event == created.data["event"] == "capsule.create"
            assert created.data["outcome"] == "success"
            assert created.data["resource"] == {"id": capsule["id"], "type": "sandbox"}
            assert created.data["actor"]["type"] == "api_key"
            assert created.data["metadata"]["to"] == "running"
            assert paused.data["event"] == "capsule.pause"
            assert paused.data["metadata"]["to"] == "paused"
            assert created.id is not None and paused.id is not None and paused.id > created.id
            # Bob's first event is his own capsule's: Ada's went only to her team.
            own = await make_capsule(stack.client, bob)
            frame = await bobs.next()
            assert frame is not None and frame.data["resource"]["id"] == own["id"]


async def test_resume_with_last_event_id(start_app: StartApp) -> None:
    async with start_app() as stack, served(stack.app, force_exit=True) as url:
        ada = await new_account(stack.client)
        async with stream(url, ada.h) as events:
            capsule = await make_capsule(stack.client, ada)
            (created,) = await events.capsule_events(capsule["id"], 1)
        # Missed while disconnected:
        resp = await stack.client.post(f"/v1/capsules/{capsule['id']}/pause", headers=ada.h)
        assert resp.status_code == 200, resp.text
        resp = await stack.client.delete(f"/v1/capsules/{capsule['id']}", headers=ada.h)
        assert resp.status_code == 204, resp.text
        headers = {**ada.h, "Last-Event-ID": str(created.id)}
        async with stream(url, headers) as resumed:
            missed = await resumed.capsule_events(capsule["id"], 2)
            assert [f.data["event"] for f in missed] == ["capsule.pause", "capsule.destroy"]
            # And live events follow the backlog.
            later = await make_capsule(stack.client, ada)
            (frame,) = await resumed.capsule_events(later["id"], 1)
            assert frame.data["event"] == "capsule.create"


async def test_without_a_stream_a_wake_up_waits_and_a_new_stream_starts_after_it(
    start_app: StartApp,
) -> None:
    """No stream open: a commit's wake-up is left to the poll interval (a minute here); a
    stream opened then starts after the events committed before it, as if they had been read."""
    async with (
        start_app(events_poll_interval_sec=60) as stack,
        served(stack.app, force_exit=True) as url,
    ):
        hub: EventHub = stack.app.state.events
        ada = await new_account(stack.client)
        before = await make_capsule(stack.client, ada)
        # The create's wake-up, seen and left unread:
        await wait_for(lambda: hub._skipped, WAIT, what="a wake-up left unread")
        async with stream(url, ada.h) as events:
            later = await make_capsule(stack.client, ada)
            frame = await events.next()
            assert frame is not None and frame.data["resource"]["id"] == later["id"], (
                frame,
                before["id"],
            )


async def test_bad_requests(start_app: StartApp) -> None:
    async with start_app() as stack:
        ada = await new_account(stack.client)
        resp = await stack.client.get("/v1/events/stream")
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized"
        resp = await stack.client.get(
            "/v1/events/stream", headers={**ada.h, "Last-Event-ID": "not-a-number"}
        )
        assert resp.status_code == 400
        assert "Last-Event-ID" in resp.json()["error"]["message"]


async def test_heartbeat_and_end_on_shutdown(start_app: StartApp) -> None:
    async with (
        start_app(events_heartbeat_sec=0.1) as stack,
        served(stack.app, force_exit=True) as url,
    ):
        ada = await new_account(stack.client)
        async with stream(url, ada.h) as events:
            # An idle stream gets comment lines only.
            async with asyncio.timeout(WAIT):
                line = await anext(events.lines)
            assert line == ": keepalive"
            # The hub closing (the app's shutdown) ends the stream cleanly.
            hub: EventHub = stack.app.state.events
            await hub.close()
            assert await events.next() is None


async def test_an_event_made_through_one_process_reaches_the_other(start_app: StartApp) -> None:
    async with (
        start_app() as one,
        start_app() as two,
        served(two.app, force_exit=True) as url_two,
    ):
        ada = await new_account(one.client)
        async with stream(url_two, ada.h) as events:
            capsule = await make_capsule(one.client, ada)
            (created,) = await events.capsule_events(capsule["id"], 1)
            assert created.data["event"] == "capsule.create"


def test_gap_in_ids_waits_for_the_earlier_event() -> None:
    """On PostgreSQL a later id can commit before an earlier one: the hub holds it back."""

    @dataclass
    class Row:
        id: int
        team_id: Any
        payload: dict[str, Any]

    hub = EventHub(None)  # type: ignore[arg-type]  # no database: rows are handed in
    team = object()
    sub = Subscription(team, 0)  # type: ignore[arg-type]
    hub._subs.add(sub)
    hub._deliver(
        [Row(1, team, {"event": "capsule.create"}), Row(3, team, {"event": "capsule.pause"})]
    )
    hub._deliver(
        [Row(2, team, {"event": "capsule.resume"}), Row(3, team, {"event": "capsule.pause"})]
    )
    got = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [m.id for m in got if m is not None] == [1, 2, 3]


@pytest.fixture
def sdk() -> Iterator[Any]:
    with published_sdk() as wrenn:
        yield wrenn


async def test_published_sdk_stream_yields_the_create_event(start_app: StartApp, sdk: Any) -> None:
    async with start_app() as stack, served(stack.app, force_exit=True) as url:
        ada: Account = await new_account(stack.client)
        seen: list[Any] = []
        connected = threading.Event()
        done = threading.Event()
        wanted: dict[str, str] = {}

        def consume() -> None:
            with sdk.WrennClient(api_key=ada.key, base_url=url) as client:
                for event in client.events.stream():
                    seen.append(event)
                    if event.event == "connected":
                        connected.set()
                    elif event.resource and event.resource.id == wanted.get("id"):
                        break
            done.set()

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        assert await asyncio.to_thread(connected.wait, WAIT), "the SDK's stream did not open"
        capsule = await make_capsule(stack.client, ada)
        wanted["id"] = capsule["id"]
        assert await asyncio.to_thread(done.wait, WAIT), "the create event did not arrive"
        event = seen[-1]
        assert event.event.value == "capsule.create"
        assert event.outcome.value == "success"
        assert event.resource.id == capsule["id"]
        assert event.sandbox is not None and event.sandbox.id == capsule["id"]
