"""The host agent's side of a directory watch (EnvdClient.watch_dir, the FsEvent messages): a real
envd's stream of real changes, and what the agent makes of answers no honest envd sends (an error
line, an unknown operation, a refusal before the stream starts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from tests.unit.envd.conftest import Envd
from tests.unit.hostagent.fake_envd import Answer, FakeEnvd, error_body
from wrenn_server.hostagent import errors
from wrenn_server.hostagent.envd_client import EnvdClient
from wrenn_server.hostagent.envd_types import WatchEvent
from wrenn_server.hostagent.messages import fs_event_msg
from wrenn_server.hostagent.rpc_guard import status_for
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb


@pytest.fixture(scope="module")
def real_envd() -> Iterator[Envd]:
    server = Envd()
    yield server
    server.stop()


@pytest.fixture
async def fake_client(envd: FakeEnvd) -> AsyncIterator[EnvdClient]:
    c = EnvdClient("127.0.0.1", envd.port, "t0ken")
    try:
        yield c
    finally:
        await c.aclose()


async def test_a_real_envds_events_become_messages(real_envd: Envd, tmp_path: Path) -> None:
    client = EnvdClient("127.0.0.1", real_envd.port, real_envd.token)
    try:
        stream = client.watch_dir(str(tmp_path), recursive=True)
        first = await asyncio.wait_for(anext(stream), 10)
        assert first == {"op": "started", "name": ""}
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "f").write_bytes(b"x")
        seen: list[WatchEvent] = []
        while {"op": "create", "name": "sub/f"} not in seen:
            seen.append(await asyncio.wait_for(anext(stream), 10))
        assert seen[0] == {"op": "create", "name": "sub"}
        (tmp_path / "sub" / "f").unlink()
        (tmp_path / "sub").rmdir()
        tmp_path.rmdir()
        rest = [ev async for ev in stream]  # ends with the directory
        assert rest[-1] == {"op": "remove", "name": ""}
        assert {"op": "remove", "name": "sub/f"} in rest
        messages = [fs_event_msg(ev) for ev in [first, *seen, *rest]]
        assert messages[0] == pb.FsEvent(type=pb.FS_EVENT_TYPE_STARTED)
        assert pb.FsEvent(type=pb.FS_EVENT_TYPE_CREATE, name="sub/f") in messages
        assert messages[-1] == pb.FsEvent(type=pb.FS_EVENT_TYPE_REMOVE)
    finally:
        await client.aclose()


async def test_a_refusal_before_the_stream_is_the_callers_error(
    real_envd: Envd, tmp_path: Path
) -> None:
    client = EnvdClient("127.0.0.1", real_envd.port, real_envd.token)
    try:
        with pytest.raises(errors.NotFound):
            await anext(client.watch_dir(str(tmp_path / "missing"), recursive=False))
    finally:
        await client.aclose()


def _watch_answer(*lines: bytes) -> Answer:
    return Answer(200, [b'{"type":"start"}\n', *lines], "application/x-ndjson")


async def test_an_error_line_ends_the_stream_with_its_status(
    envd: FakeEnvd, fake_client: EnvdClient
) -> None:
    error = b'{"type":"error","code":"resource_exhausted","message":"too many directories"}\n'
    envd.answers["/fs/watch"] = _watch_answer(b'{"type":"overflow"}\n', error)
    got: list[WatchEvent] = []
    with pytest.raises(errors.ResourceExhausted) as raised:
        async for ev in fake_client.watch_dir("/w", recursive=True):
            got.append(ev)
    assert got == [{"op": "started", "name": ""}, {"op": "overflow", "name": ""}]
    assert status_for(raised.value) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "too many directories",
    )


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"event","op":"explode","name":"x"}\n',
        b'{"type":"event","op":"create","name":7}\n',
        b"not json\n",
        b'{"type":"error","code":"internal","message":"/opt/wrenn/envd/secret.py"}\n',
    ],
)
async def test_lines_no_envd_sends_are_internal(
    envd: FakeEnvd, fake_client: EnvdClient, line: bytes
) -> None:
    envd.answers["/fs/watch"] = _watch_answer(line)
    with pytest.raises(errors.Internal) as raised:
        async for _ev in fake_client.watch_dir("/w", recursive=False):
            pass
    assert status_for(raised.value) == (grpc.StatusCode.INTERNAL, "internal error")


async def test_the_end_line_ends_the_stream_and_the_query_is_sent(
    envd: FakeEnvd, fake_client: EnvdClient
) -> None:
    envd.answers["/fs/watch"] = _watch_answer(
        b'{"type":"event","op":"remove","name":""}\n{"type":"end","reason":"removed"}\n'
    )
    got = [ev async for ev in fake_client.watch_dir("/w", recursive=True, user="u")]
    assert got == [{"op": "started", "name": ""}, {"op": "remove", "name": ""}]


async def test_a_refusal_is_mapped(envd: FakeEnvd, fake_client: EnvdClient) -> None:
    envd.answers["/fs/watch"] = Answer(
        403, error_body("permission_denied", "permission denied: /r")
    )
    with pytest.raises(errors.PermissionDenied):
        await anext(fake_client.watch_dir("/r", recursive=False, user="u"))
