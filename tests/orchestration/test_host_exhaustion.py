"""A host out of room (its disk full, out of file descriptors or memory: the agent's
RESOURCE_EXHAUSTED) while a capsule is paused or snapshotted: the caller gets the host's 503 with
the agent's reason, and the capsule stays as it was, in the agent and in the database. A capsule
out of room of its own (a file write past its disk) stays the capsule's 413."""

from __future__ import annotations

import grpc
from sqlalchemy import select

from wrenn_server.controlplane.db.models import Template

from ..controlplane.helpers import assert_error
from .conftest import Stack
from .helpers import capsule_status, make_capsule, new_account

DISK_FULL = "the host's disk is full: try again later"


async def test_a_snapshot_on_a_full_host_is_503_and_changes_nothing(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    running = (await make_capsule(api, alice))["id"]
    paused = (await make_capsule(api, alice))["id"]
    assert (await api.post(f"/v1/capsules/{paused}/pause", headers=alice.h)).status_code == 200
    for cid, status in ((running, "running"), (paused, "paused")):
        agent.faults.fail("CreateSnapshot", grpc.StatusCode.RESOURCE_EXHAUSTED, DISK_FULL)
        resp = await api.post(
            "/v1/snapshots", json={"sandbox_id": cid, "name": f"full-{status}"}, headers=alice.h
        )
        assert assert_error(resp, 503, "no_hosts_available")["message"] == DISK_FULL
        assert await capsule_status(api, alice, cid) == status
        assert agent.sandboxes[cid].status == status
    assert not [n for n in agent.templates if n.startswith("full-")]
    async with stack.db.sessionmaker() as session:
        names = list(await session.scalars(select(Template.name)))
    assert not [n for n in names if n.startswith("full-")]
    # Once the host has room again, the same snapshot is made.
    made = await api.post(
        "/v1/snapshots", json={"sandbox_id": running, "name": "full-running"}, headers=alice.h
    )
    assert made.status_code == 201, made.text


async def test_a_pause_on_a_full_host_is_503_and_leaves_it_running(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    agent.faults.fail("PauseSandbox", grpc.StatusCode.RESOURCE_EXHAUSTED, DISK_FULL)
    resp = await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)
    assert assert_error(resp, 503, "no_hosts_available")["message"] == DISK_FULL
    assert await capsule_status(api, alice, cid) == "running"
    assert agent.sandboxes[cid].status == "running"
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200


async def test_a_capsule_out_of_its_own_room_is_413(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    alice = await new_account(api)
    cid = (await make_capsule(api, alice))["id"]
    full = "no space left on the capsule's disk"
    agent.faults.fail("WriteFile", grpc.StatusCode.RESOURCE_EXHAUSTED, full)
    agent.faults.fail("WriteFileStream", grpc.StatusCode.RESOURCE_EXHAUSTED, full)
    resp = await api.post(
        f"/v1/capsules/{cid}/files/write",
        data={"path": "/tmp/x"},
        files={"file": ("x.bin", b"x", "application/octet-stream")},
        headers=alice.h,
    )
    assert assert_error(resp, 413, "too_large")["message"] == full
