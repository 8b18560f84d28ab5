"""Every capsule route over REST with real capsules: happy paths, unknown and malformed ids,
wrong states, and bad input that must leave nothing behind."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models.capsules import Sandbox
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.settings import Settings
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import assert_error, count
from .rest_fixtures import (
    CAPSULE_CALLS,
    RUNNING_ONLY,
    Account,
    both_dialects,
    make_capsule,
    new_account,
    sh,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def user(api: httpx.AsyncClient) -> Account:
    return await new_account(api)


@pytest.fixture
async def capsule(api: httpx.AsyncClient, user: Account) -> dict[str, Any]:
    return await make_capsule(api, user)


async def agent_ids(agent: AgentClient) -> set[str]:
    listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
    return {sb.sandbox_id for sb in listed.sandboxes}


def test_the_tables_cover_every_capsule_route(tmp_path: Path) -> None:
    app: FastAPI = create_app(Settings(data_dir=tmp_path, dev_mode=True))
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1/capsules/{id}")
        for method in operations
    }
    assert documented == {(c.method, c.route) for c in CAPSULE_CALLS}


# -- create, get, list ----------------------------------------------------------------------


async def test_create_get_list(api: httpx.AsyncClient, user: Account, agent: AgentClient) -> None:
    first = await make_capsule(api, user)
    assert (first["template"], first["vcpus"], first["memory_mb"]) == ("minimal", 1, 512)
    assert first["timeout_sec"] == 0
    second = await make_capsule(api, user, vcpus=2, memory_mb=256, timeout_sec=600)
    on_agent = await agent.get_sandbox(pb.SandboxRef(sandbox_id=second["id"]))
    assert (on_agent.vcpus, on_agent.memory_mb, on_agent.timeout_sec) == (2, 256, 600)
    assert on_agent.disk_size_mb == 5120  # the default disk: 5 GB, sparse
    resp = await api.get(f"/v1/capsules/{second['id']}", headers=user.h)
    assert resp.status_code == 200
    got = resp.json()
    assert got == second | {"last_updated": got["last_updated"]}
    resp = await api.get("/v1/capsules", headers=user.h)
    assert [c["id"] for c in resp.json()] == [second["id"], first["id"]]  # newest first


@both_dialects
@pytest.mark.parametrize(
    "body",
    [
        {"vcpus": 0},
        {"vcpus": 65},
        {"vcpus": "two"},
        {"memory_mb": 1},
        {"timeout_sec": -1},
        {"template": ""},
        {"template": "no-such-template"},
        ["not", "an", "object"],
    ],
    ids=repr,
)
async def test_bad_create_requests_leave_nothing(
    api: httpx.AsyncClient, user: Account, rest_db: Database, agent: AgentClient, body: Any
) -> None:
    before = await agent_ids(agent)
    resp = await api.post("/v1/capsules", json=body, headers=user.h)
    assert_error(resp, 400, "invalid_request")
    assert await count(rest_db, Sandbox) == 0
    assert (await api.get("/v1/capsules", headers=user.h)).json() == []
    assert await agent_ids(agent) == before


async def test_create_with_a_body_that_is_not_json(api: httpx.AsyncClient, user: Account) -> None:
    resp = await api.post(
        "/v1/capsules",
        content=b"template=minimal",
        headers=user.h | {"Content-Type": "application/json"},
    )
    assert_error(resp, 400, "invalid_request")


# -- unknown ids -------------------------------------------------------------------------------


@both_dialects
@pytest.mark.parametrize(
    "capsule_id",
    [f"sb-{uuid.uuid4()}", "nope", "sb-123", f"usr-{uuid.uuid4()}", f"sb-{uuid.uuid4().hex}"],
)
async def test_unknown_and_malformed_ids_are_not_found(
    api: httpx.AsyncClient, user: Account, capsule_id: str
) -> None:
    for call in CAPSULE_CALLS:
        resp = await call.send(api, capsule_id, user.h)
        assert_error(resp, 404, "not_found")
    resp = await api.post("/v1/snapshots", json={"sandbox_id": capsule_id}, headers=user.h)
    assert_error(resp, 404, "not_found")


# -- exec -----------------------------------------------------------------------------------


async def test_exec(api: httpx.AsyncClient, user: Account, capsule: dict[str, Any]) -> None:
    cid = capsule["id"]

    async def exec_(**body: Any) -> dict[str, Any]:
        resp = await api.post(f"/v1/capsules/{cid}/exec", json=body, headers=user.h)
        assert resp.status_code == 200, resp.text
        result: dict[str, Any] = resp.json()
        return result

    # A command line (no args) runs in a shell; failures come back as exit codes, not errors.
    res = await exec_(cmd="echo out; echo err >&2; exit 3")
    assert (res["stdout"], res["stderr"], res["exit_code"]) == ("out\n", "err\n", 3)
    # args: executed directly, no shell expansion.
    res = await exec_(cmd="echo", args=["$HOME", "*"])
    assert res["stdout"] == "$HOME *\n"
    res = await exec_(
        cmd="sh", args=["-c", "echo $GREETING; pwd"], envs={"GREETING": "hi"}, cwd="/tmp"
    )
    assert res["stdout"] == "hi\n/tmp\n"
    # Output that is not UTF-8 comes back base64-encoded.
    res = await exec_(cmd="printf", args=["\\377\\376\\000ok"])
    assert res["encoding"] == "base64"
    assert base64.b64decode(res["stdout"]) == b"\xff\xfe\x00ok"
    # The timeout kills the command and fails the call (the Go system's 502 agent_error).
    started = time.monotonic()
    resp = await api.post(
        f"/v1/capsules/{capsule['id']}/exec",
        json={"cmd": "sleep 30", "timeout_sec": 1},
        headers=user.h,
    )
    assert_error(resp, 502, "agent_error")
    assert 0.9 <= time.monotonic() - started < 10
    res = await exec_(cmd="no-such-binary-here")
    assert res["exit_code"] == 127


async def test_exec_bad_input(
    api: httpx.AsyncClient, user: Account, capsule: dict[str, Any]
) -> None:
    bodies: list[Any] = [
        {},
        {"cmd": ""},
        {"cmd": 5},
        {"cmd": "ls", "args": "-l"},
        {"cmd": "ls", "timeout_sec": 0},
        ["ls"],
    ]
    for body in bodies:
        resp = await api.post(f"/v1/capsules/{capsule['id']}/exec", json=body, headers=user.h)
        assert_error(resp, 400, "invalid_request")
    # A program that does not exist is the caller's mistake, not a missing capsule (404).
    for background in (False, True):
        resp = await api.post(
            f"/v1/capsules/{capsule['id']}/exec",
            json={"cmd": "no-such-binary-here", "args": [], "background": background},
            headers=user.h,
        )
        error = assert_error(resp, 400, "invalid_request")
        assert "no-such-binary-here" in error["message"]


# -- processes ---------------------------------------------------------------------------


async def test_background_processes(
    api: httpx.AsyncClient, user: Account, capsule: dict[str, Any]
) -> None:
    cid = capsule["id"]
    url = f"/v1/capsules/{cid}/exec"
    resp = await api.post(
        url, json={"cmd": "sleep", "args": ["600"], "background": True, "tag": "sleeper"},
        headers=user.h,
    )  # fmt: skip
    assert resp.status_code == 202, resp.text
    tagged = resp.json()
    assert tagged == {"sandbox_id": cid, "cmd": "sleep", "pid": tagged["pid"], "tag": "sleeper"}
    resp = await api.post(url, json={"cmd": "sleep 700", "background": True}, headers=user.h)
    assert resp.status_code == 202, resp.text
    untagged = resp.json()
    assert untagged["tag"] == str(untagged["pid"])  # no tag given: the pid is the tag

    async def listed() -> dict[str, dict[str, Any]]:
        resp = await api.get(f"/v1/capsules/{cid}/processes", headers=user.h)
        assert resp.status_code == 200, resp.text
        return {p["tag"]: p for p in resp.json()["processes"]}

    procs = await listed()
    assert procs["sleeper"]["pid"] == tagged["pid"]
    assert procs["sleeper"]["cmd"] == "sleep" and procs["sleeper"]["args"] == ["600"]
    assert procs[untagged["tag"]]["pid"] == untagged["pid"]

    # Kill by tag (SIGKILL by default), then by pid with SIGTERM.
    resp = await api.delete(f"/v1/capsules/{cid}/processes/sleeper", headers=user.h)
    assert resp.status_code == 204, resp.text
    resp = await api.delete(
        f"/v1/capsules/{cid}/processes/{untagged['pid']}",
        params={"signal": "SIGTERM"},
        headers=user.h,
    )
    assert resp.status_code == 204, resp.text
    for _ in range(50):
        if not {"sleeper", untagged["tag"]} & set(await listed()):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"processes still listed: {await listed()}")
    res = await sh(api, user, cid, "pgrep -x sleep || true")
    assert res["stdout"] == ""

    # Unknown selector, and a signal outside the contract.
    resp = await api.delete(f"/v1/capsules/{cid}/processes/sleeper", headers=user.h)
    assert_error(resp, 404, "not_found")
    resp = await api.delete(f"/v1/capsules/{cid}/processes/999999", headers=user.h)
    assert_error(resp, 404, "not_found")
    resp = await api.delete(
        f"/v1/capsules/{cid}/processes/1", params={"signal": "SIGHUP"}, headers=user.h
    )
    assert_error(resp, 400, "invalid_request")


# -- states ---------------------------------------------------------------------------------


@both_dialects
async def test_wrong_states_are_conflicts(
    api: httpx.AsyncClient, user: Account, agent: AgentClient
) -> None:
    capsule = await make_capsule(api, user)
    cid = capsule["id"]
    resp = await api.post(f"/v1/capsules/{cid}/resume", headers=user.h)
    assert_error(resp, 409, "invalid_state")

    resp = await api.post(f"/v1/capsules/{cid}/pause", headers=user.h)
    assert resp.status_code == 200 and resp.json()["status"] == "paused"
    for call in [*RUNNING_ONLY, *[c for c in CAPSULE_CALLS if c.route.endswith("/pause")]]:
        resp = await call.send(api, cid, user.h)
        assert_error(resp, 409, "invalid_state")
    resp = await api.get(f"/v1/capsules/{cid}/metrics", headers=user.h)
    assert resp.status_code == 200, resp.text  # a paused capsule's metrics come from the DB
    on_agent = await agent.get_sandbox(pb.SandboxRef(sandbox_id=cid))
    assert on_agent.status == pb.SANDBOX_STATUS_PAUSED

    # A paused capsule can be destroyed; after that, nothing but get and destroy works.
    resp = await api.delete(f"/v1/capsules/{cid}", headers=user.h)
    assert resp.status_code == 204
    assert cid not in await agent_ids(agent)
    for call in CAPSULE_CALLS:
        resp = await call.send(api, cid, user.h)
        if call.route == "/v1/capsules/{id}":
            assert resp.status_code in (200, 204), resp.text
        elif call.route.endswith("/metrics"):
            assert_error(resp, 404, "not_found")  # the contract: none for stopped capsules
        else:
            assert_error(resp, 409, "invalid_state")
    resp = await api.post("/v1/snapshots", json={"sandbox_id": cid}, headers=user.h)
    assert_error(resp, 409, "invalid_state")
    resp = await api.get(f"/v1/capsules/{cid}", headers=user.h)
    assert resp.json()["status"] == "stopped"
