"""A user's first session, end to end over REST, as the SDK would drive it: sign up, log in,
make an API key, then a capsule's whole life with real gVisor underneath."""

from __future__ import annotations

import grpc
import httpx
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import PASSWORD, assert_error, bearer
from ..waiting import wait_for
from .conftest import HOME
from .rest_fixtures import both_dialects

pytestmark = [pytest.mark.integration, both_dialects]
WORK = f"{HOME}/work"  # the default user's to write


async def line_count(api: httpx.AsyncClient, key: dict[str, str], cid: str, path: str) -> int:
    resp = await api.post(
        f"/v1/capsules/{cid}/exec", json={"cmd": "wc", "args": ["-l", path]}, headers=key
    )
    assert resp.status_code == 200, resp.text
    return int(resp.json()["stdout"].split()[0])


async def test_user_scenario(api: httpx.AsyncClient, agent: AgentClient) -> None:
    # Account: sign up, then log in as a returning user would, then make an API key.
    email = "grace@example.com"
    resp = await api.post(
        "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Grace Hopper"}
    )
    assert resp.status_code == 201, resp.text
    resp = await api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    token = resp.json()["token"]
    resp = await api.post("/v1/api-keys", json={"name": "laptop"}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    key = {"X-API-Key": resp.json()["key"]}

    # Create.
    resp = await api.post(
        "/v1/capsules", json={"template": "minimal", "vcpus": 1, "memory_mb": 512}, headers=key
    )
    assert resp.status_code == 201, resp.text
    capsule = resp.json()
    cid = capsule["id"]
    assert cid.startswith("sb-")
    assert capsule["status"] == "running"
    assert (capsule["template"], capsule["vcpus"], capsule["memory_mb"]) == ("minimal", 1, 512)
    assert capsule["timeout_sec"] == 0 and capsule["started_at"] is not None
    on_agent = await agent.get_sandbox(pb.SandboxRef(sandbox_id=cid))
    assert on_agent.status == pb.SANDBOX_STATUS_RUNNING
    resp = await api.get("/v1/capsules", headers=key)
    assert [c["id"] for c in resp.json()] == [cid]

    # Exec.
    resp = await api.post(
        f"/v1/capsules/{cid}/exec", json={"cmd": "echo", "args": ["hello", "capsule"]}, headers=key
    )
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["stdout"] == "hello capsule\n" and out["stderr"] == ""
    assert out["exit_code"] == 0 and out["encoding"] == "utf-8"
    assert out["sandbox_id"] == cid and out["cmd"] == "echo"
    assert isinstance(out["duration_ms"], int) and out["duration_ms"] >= 0

    # Files: write (multipart path + file), list, read back.
    resp = await api.post(f"/v1/capsules/{cid}/files/mkdir", json={"path": WORK}, headers=key)
    assert resp.status_code == 200, resp.text
    content = b"notes from the user\n" * 100
    resp = await api.post(
        f"/v1/capsules/{cid}/files/write",
        data={"path": f"{WORK}/notes.txt"},
        files={"file": ("notes.txt", content, "text/plain")},
        headers=key,
    )
    assert resp.status_code == 204, resp.text
    resp = await api.post(f"/v1/capsules/{cid}/files/list", json={"path": WORK}, headers=key)
    assert resp.status_code == 200, resp.text
    entries = {e["name"]: e for e in resp.json()["entries"]}
    assert entries["notes.txt"]["type"] == "file"
    assert entries["notes.txt"]["size"] == len(content)
    assert entries["notes.txt"]["path"] == f"{WORK}/notes.txt"
    resp = await api.post(
        f"/v1/capsules/{cid}/files/read", json={"path": f"{WORK}/notes.txt"}, headers=key
    )
    assert resp.status_code == 200 and resp.content == content

    # A background process that keeps appending to a file.
    loop = f"while true; do date +%s%N >> {WORK}/ticks; sleep 0.1; done"
    resp = await api.post(
        f"/v1/capsules/{cid}/exec",
        json={"cmd": "sh", "args": ["-c", loop], "background": True, "tag": "ticker"},
        headers=key,
    )
    assert resp.status_code == 202, resp.text
    bg = resp.json()

    async def ticked(lines: int) -> bool:
        return await line_count(api, key, cid, f"{WORK}/ticks") > lines

    assert bg["tag"] == "ticker" and bg["pid"] > 0 and bg["sandbox_id"] == cid
    await wait_for(lambda: ticked(0), 10, what="the ticker writing")

    # Pause: memory and disk kept, nothing runs, exec is refused.
    resp = await api.post(f"/v1/capsules/{cid}/pause", headers=key)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "paused"
    resp = await api.get(f"/v1/capsules/{cid}", headers=key)
    assert resp.json()["status"] == "paused"
    on_agent = await agent.get_sandbox(pb.SandboxRef(sandbox_id=cid))
    assert on_agent.status == pb.SANDBOX_STATUS_PAUSED
    resp = await api.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=key)
    assert_error(resp, 409, "invalid_state")

    # Resume: the file and the background process are still there, and the process runs on.
    resp = await api.post(f"/v1/capsules/{cid}/resume", headers=key)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "running"
    resp = await api.post(
        f"/v1/capsules/{cid}/files/read", json={"path": f"{WORK}/notes.txt"}, headers=key
    )
    assert resp.status_code == 200 and resp.content == content
    resp = await api.get(f"/v1/capsules/{cid}/processes", headers=key)
    assert resp.status_code == 200, resp.text
    procs = {p["tag"]: p for p in resp.json()["processes"]}
    assert procs["ticker"]["pid"] == bg["pid"]
    before = await line_count(api, key, cid, f"{WORK}/ticks")
    await wait_for(lambda: ticked(before), 10, what="the ticker going on")

    # Destroy: the record stays, as stopped (the contract's statuses include it); the capsule
    # is gone from the host, and a second destroy is a no-op.
    resp = await api.delete(f"/v1/capsules/{cid}", headers=key)
    assert resp.status_code == 204, resp.text
    resp = await api.get(f"/v1/capsules/{cid}", headers=key)
    assert resp.status_code == 200 and resp.json()["status"] == "stopped"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.get_sandbox(pb.SandboxRef(sandbox_id=cid))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    resp = await api.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=key)
    assert_error(resp, 409, "invalid_state")
    resp = await api.delete(f"/v1/capsules/{cid}", headers=key)
    assert resp.status_code == 204
