"""What the envd client tells the dozer (doze.py): its `before_use` hook runs before each request
or stream reaches envd (so a dozing capsule is thawed first), and `in_use` counts what is open -
a request still waiting for its answer, a stream until its consumer stops - and comes back to 0
whatever way a call ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from tests.unit.hostagent.fake_envd import Answer, FakeEnvd, error_body
from tests.waiting import wait_for
from wrenn_server.hostagent import errors
from wrenn_server.hostagent.envd_client import EnvdClient

STAT = json.dumps({"name": "f", "path": "/f", "type": "file", "size": 1}).encode()


@pytest.fixture
async def client(envd: FakeEnvd) -> AsyncIterator[EnvdClient]:
    c = EnvdClient("127.0.0.1", envd.port, "t0ken")
    try:
        yield c
    finally:
        await c.aclose()


async def test_the_hook_runs_before_each_request_reaches_envd(
    envd: FakeEnvd, client: EnvdClient
) -> None:
    envd.answers["/fs/stat"] = Answer(body=STAT)
    envd.answers["/processes"] = Answer(body=b'{"processes": []}')
    envd.answers["/fs/mkdir"] = Answer(404, error_body("not_found", "no such directory"))
    seen_at_hook: list[int] = []
    client.before_use = lambda: seen_at_hook.append(len(envd.seen))
    await client.stat("/f")
    await client.list_processes()
    with pytest.raises(errors.NotFound):
        await client.mkdir("/nowhere/d")
    assert seen_at_hook == [0, 1, 2]
    assert client.in_use == 0


async def test_a_request_waiting_for_its_answer_is_in_use(
    envd: FakeEnvd, client: EnvdClient
) -> None:
    envd.answers["/fs/stat"] = Answer(hang=True)
    call = asyncio.create_task(client.stat("/f"))

    async def reached() -> bool:
        return len(envd.seen) == 1

    await wait_for(reached, 5)
    assert client.in_use == 1
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    assert client.in_use == 0


async def test_a_stream_is_in_use_until_its_consumer_stops(
    envd: FakeEnvd, client: EnvdClient
) -> None:
    started = b'{"type": "start", "pid": 7}\n'
    envd.answers["/processes"] = Answer(body=[started], content_type="application/x-ndjson")
    envd.answers["/processes/7/stream"] = Answer(body=[started])
    hooks: list[str] = []
    client.before_use = lambda: hooks.append("use")

    events = client.start_process({"cmd": "sleep 100"})
    assert client.in_use == 0 and hooks == []  # nothing reached envd before the first read
    assert (await anext(events))["type"] == "start"
    assert client.in_use == 1 and hooks == ["use"]
    await events.aclose()  # the caller left mid-stream
    assert client.in_use == 0

    # A stream read to its end is no longer in use either.
    assert [ev["type"] async for ev in client.connect(7)] == ["start"]
    assert client.in_use == 0
    assert hooks == ["use", "use"]
