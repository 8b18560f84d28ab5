"""A capsule whose sandbox dies - killed at its memory limit by code inside it, or killed from
the host - is noticed by its agent within seconds: the REST API shows it in `error` with the
reason (and an audit event says so), calls on it answer 409 instead of hanging or failing with
502, and its network, mounts, loop device and files are released. The agent keeps watching
across its own restart; a pooled capsule that dies is replaced, never handed out. A sandbox
killed while it boots, restores or is checkpointed leaves the capsule gone, paused with its
checkpoint, running again (a restore is tried twice), or in error - never running without a
sandbox, never paused on a broken image."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.proc import command_lines
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import assert_error
from .conftest import AgentProcess, CapsuleFactory
from .rest_fixtures import Account, StartApp, make_capsule, new_account, sh
from .traces import capsule_dir, traces_of

pytestmark = pytest.mark.integration

T = TypeVar("T")

# From the sandbox's death to the REST API showing it: the agent sees it at once; the
# reconciler (every 0.2 s here) copies it.
DEADLINE = 10.0
# Grows without bound, 16 MiB at a time, each page touched: far past the capsule's 128 MiB.
# Near the limit gVisor sometimes fails an allocation instead (the process exits, the capsule
# lives on), so it starts again until the host's OOM killer takes the sandbox.
ALLOCATE = "b = []\nwhile True: b.append(bytearray(16 << 20))"
OUTGROW = f"while true; do python3 -c '{ALLOCATE}'; done"


async def _capsule_when(
    api: httpx.AsyncClient, user: Account, capsule_id: str, status: str
) -> tuple[dict[str, Any], float]:
    """The capsule once it has `status`, and how long that took."""
    started = time.monotonic()
    while True:
        resp = await api.get(f"/v1/capsules/{capsule_id}", headers=user.h)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        waited = time.monotonic() - started
        if body["status"] == status:
            return body, waited
        assert waited < DEADLINE, f"{capsule_id} still {body['status']} after {DEADLINE} s"
        await asyncio.sleep(0.1)


async def _gone_from_agent(agent: AgentClient, capsule_id: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            await agent.get_sandbox(pb.SandboxRef(sandbox_id=capsule_id))
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
            return
        assert time.monotonic() < deadline, f"the agent still has {capsule_id}"
        await asyncio.sleep(0.1)


def _loop_devices_of(directory: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(directory) in line]


def _sandbox_pid(directory: Path) -> int:
    """The capsule's sandbox process (runsc's `runsc-sandbox`), found by its bundle."""
    needle = f"--bundle={directory}".encode()
    for pid, argv in command_lines():
        if argv[0] == b"runsc-sandbox" and needle in argv:
            return pid
    raise AssertionError(f"no sandbox process for {directory}")


async def _assert_dead(
    api: httpx.AsyncClient, agent: AgentClient, user: Account, capsule_id: str, reason: str
) -> None:
    directory = capsule_dir(capsule_id)
    body, waited = await _capsule_when(api, user, capsule_id, "error")
    assert body["status_reason"] == reason, body
    assert waited < DEADLINE

    # Calls on it are refused with a clear conflict, not a gateway error.
    resp = await api.post(
        f"/v1/capsules/{capsule_id}/exec", json={"cmd": "echo", "args": ["hi"]}, headers=user.h
    )
    assert_error(resp, 409, "invalid_state")
    resp = await api.post(
        f"/v1/capsules/{capsule_id}/files/list", json={"path": "/"}, headers=user.h
    )
    assert_error(resp, 409, "invalid_state")

    events = await api.get("/v1/audit-logs", params={"resource_type": "sandbox"}, headers=user.jwt)
    assert events.status_code == 200, events.text
    died = [
        e
        for e in events.json()["items"]
        if e["resource_id"] == capsule_id and e["action"] == "died"
    ]
    assert len(died) == 1, events.json()
    assert (died[0]["status"], died[0]["metadata"]["reason"]) == ("error", reason)
    assert died[0]["actor"]["type"] == "system"

    # The control plane had the agent destroy it: nothing of it is left on the host (the
    # agent forgets it first, then cleans up).
    await _gone_from_agent(agent, capsule_id)
    deadline = time.monotonic() + DEADLINE
    while left := traces_of(capsule_id) + traces_of(directory.name) + _loop_devices_of(directory):
        assert time.monotonic() < deadline, f"left on the host: {left}"
        await asyncio.sleep(0.1)
    assert not directory.exists()


async def test_a_capsule_killed_at_its_memory_limit_is_reported(
    start_app: StartApp, agent: AgentClient
) -> None:
    async with start_app(reconcile_interval_sec=0.2) as rest:
        api = rest.client
        user = await new_account(api)
        capsule = await make_capsule(api, user, memory_mb=128)
        capsule_id = capsule["id"]
        assert (await sh(api, user, capsule_id, "echo up"))["stdout"] == "up\n"
        directory = capsule_dir(capsule_id)
        assert _loop_devices_of(directory) != []  # the check below can see one

        # The process that outgrows the capsule takes the sandbox with it: the exec that
        # was running says why, at once, instead of hanging until its timeout.
        started = time.monotonic()
        resp = await api.post(
            f"/v1/capsules/{capsule_id}/exec",
            json={"cmd": "sh", "args": ["-c", OUTGROW], "timeout_sec": 120},
            headers=user.h,
        )
        error = assert_error(resp, 409, "invalid_state")
        assert "out of memory" in error["message"], error
        assert time.monotonic() - started < 30

        await _assert_dead(api, agent, user, capsule_id, "out of memory")


async def test_a_sandbox_killed_from_the_host_is_reported(
    start_app: StartApp, agent: AgentClient
) -> None:
    async with start_app(reconcile_interval_sec=0.2) as rest:
        api = rest.client
        user = await new_account(api)
        capsule_id = (await make_capsule(api, user, memory_mb=256))["id"]
        other_id = (await make_capsule(api, user, memory_mb=256))["id"]
        os.kill(_sandbox_pid(capsule_dir(capsule_id)), signal.SIGKILL)

        await _assert_dead(api, agent, user, capsule_id, "sandbox exited")
        # Its neighbour is untouched.
        assert (await sh(api, user, other_id, "echo alive"))["stdout"] == "alive\n"
        resp = await api.get(f"/v1/capsules/{other_id}", headers=user.h)
        assert (resp.json()["status"], resp.json()["status_reason"]) == ("running", None)


async def test_pausing_and_destroying_are_not_deaths(
    start_app: StartApp, agent: AgentClient
) -> None:
    """The agent stops sandboxes itself to pause (checkpoint) and destroy them: those exits
    are not mistaken for deaths."""
    async with start_app(reconcile_interval_sec=0.2) as rest:
        api = rest.client
        user = await new_account(api)
        capsule_id = (await make_capsule(api, user, memory_mb=256))["id"]
        for action, status in (("pause", "paused"), ("resume", "running"), ("pause", "paused")):
            resp = await api.post(f"/v1/capsules/{capsule_id}/{action}", headers=user.h)
            assert resp.status_code == 200 and resp.json()["status"] == status, resp.text
        # Still paused over several reconciler passes (a death would show within one).
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=capsule_id))
            assert got.status == pb.SANDBOX_STATUS_PAUSED
            await asyncio.sleep(0.1)
        resp = await api.get(f"/v1/capsules/{capsule_id}", headers=user.h)
        assert (resp.json()["status"], resp.json()["status_reason"]) == ("paused", None)
        assert (await api.delete(f"/v1/capsules/{capsule_id}", headers=user.h)).is_success
        await _gone_from_agent(agent, capsule_id)


async def test_a_pooled_capsule_that_dies_is_replaced(agent: AgentClient) -> None:
    """Nobody owns a pooled capsule yet: if its sandbox dies, the pool drops it (nothing of it
    is left) and boots another, and nobody is handed a dead capsule."""
    from .test_pool import pooled_handles

    deadline = time.monotonic() + 60
    while not (handles := pooled_handles()):
        assert time.monotonic() < deadline, "the pool did not fill"
        await asyncio.sleep(0.2)
    victim = sorted(handles)[0]
    directory = capsule_dir(victim)
    os.kill(_sandbox_pid(directory), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while traces_of(victim) or not pooled_handles() - {victim}:
        assert time.monotonic() < deadline, f"left: {traces_of(victim)}"
        await asyncio.sleep(0.2)
    created = await agent.create_sandbox(pb.CreateSandboxRequest(timeout_sec=30))
    try:
        assert created.status == pb.SANDBOX_STATUS_RUNNING
        res = await agent.exec(pb.ExecRequest(sandbox_id=created.sandbox_id, cmd="echo alive"))
        assert res.stdout == b"alive\n"
    finally:
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=created.sandbox_id))


async def _dead_on_agent(agent: AgentClient, capsule_id: str) -> pb.Sandbox:
    deadline = time.monotonic() + DEADLINE
    while True:
        got: pb.Sandbox = await agent.get_sandbox(pb.SandboxRef(sandbox_id=capsule_id))
        if got.status == pb.SANDBOX_STATUS_DEAD:
            return got
        assert time.monotonic() < deadline, f"{capsule_id} is still {got.status}"
        await asyncio.sleep(0.1)


async def test_watching_survives_an_agent_restart(
    agent: AgentClient, agent_process: AgentProcess, new_capsule: CapsuleFactory
) -> None:
    """A capsule the restarted agent adopted is watched like one it booted, and a capsule that
    was dead before the restart is still dead, with its reason, after it."""
    adopted, dead = await new_capsule(memory_mb=256), await new_capsule(memory_mb=256)
    os.kill(_sandbox_pid(capsule_dir(dead.sandbox_id)), signal.SIGKILL)
    await _dead_on_agent(agent, dead.sandbox_id)

    agent_process.kill9()
    agent_process.start()

    got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=dead.sandbox_id))
    assert (got.status, got.exit_reason) == (pb.SANDBOX_STATUS_DEAD, "sandbox exited")
    got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=adopted.sandbox_id))
    assert got.status == pb.SANDBOX_STATUS_RUNNING
    os.kill(_sandbox_pid(capsule_dir(adopted.sandbox_id)), signal.SIGKILL)
    got = await _dead_on_agent(agent, adopted.sandbox_id)
    assert got.exit_reason == "sandbox exited"
    for capsule in (adopted, dead):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent.exec(pb.ExecRequest(sandbox_id=capsule.sandbox_id, cmd="true"))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "dead" in (refused.value.details() or "")


async def _paused_or_dead(api: httpx.AsyncClient, user: Account, capsule_id: str) -> dict[str, Any]:
    """The capsule once it reads paused or error."""
    deadline = time.monotonic() + DEADLINE
    while True:
        body: dict[str, Any] = (await api.get(f"/v1/capsules/{capsule_id}", headers=user.h)).json()
        if body["status"] in ("paused", "error"):
            return body
        assert time.monotonic() < deadline, f"{capsule_id} still {body['status']}"
        await asyncio.sleep(0.1)


async def _running_with_its_files_or_dead(
    api: httpx.AsyncClient, user: Account, capsule_id: str
) -> dict[str, Any]:
    """The capsule once it reads error, or running and answering with the file written before
    (`~/mark`): a sandbox killed after the resume answered reads running until its death is
    seen, and refuses commands meanwhile."""
    deadline = time.monotonic() + DEADLINE
    while True:
        body: dict[str, Any] = (await api.get(f"/v1/capsules/{capsule_id}", headers=user.h)).json()
        if body["status"] == "error":
            return body
        if body["status"] == "running":
            cat = {"cmd": "sh", "args": ["-c", "cat ~/mark"]}
            resp = await api.post(f"/v1/capsules/{capsule_id}/exec", json=cat, headers=user.h)
            if resp.status_code == 200 and resp.json()["stdout"] == "kept\n":
                return body
        assert time.monotonic() < deadline, f"{capsule_id} still {body['status']}"
        await asyncio.sleep(0.1)


async def _resumes_with_its_files(api: httpx.AsyncClient, user: Account, capsule_id: str) -> None:
    """A paused capsule resumes with the file written before (`~/mark`), then is destroyed."""
    resp = await api.post(f"/v1/capsules/{capsule_id}/resume", headers=user.h)
    assert resp.status_code == 200 and resp.json()["status"] == "running", resp.text
    assert (await sh(api, user, capsule_id, "cat ~/mark"))["stdout"] == "kept\n"
    assert (await api.delete(f"/v1/capsules/{capsule_id}", headers=user.h)).is_success


async def _killed_during(call: Awaitable[T], victim: Callable[[], Awaitable[int]]) -> T:
    """The outcome of `call`, run while the sandbox process `victim()` finds is killed -9."""
    running = asyncio.ensure_future(call)
    try:
        os.kill(await victim(), signal.SIGKILL)
    finally:
        outcome = await running
    return outcome


async def _new_sandbox(directory: Path, old: int | None, deadline: float) -> int:
    """The capsule's new sandbox process as soon as it exists (its boot or restore under way),
    other than `old`."""
    needle = f"--bundle={directory}".encode()
    while True:
        for pid, argv in command_lines():
            if argv[0] == b"runsc-sandbox" and needle in argv and pid != old:
                return pid
        assert time.monotonic() < deadline, f"no new sandbox for {directory}"
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("after_sec", [0.0, 0.15], ids=["in-runsc-restore", "as-envd-wakes"])
async def test_a_sandbox_killed_while_it_restores_never_shows_running(
    start_app: StartApp, agent: AgentClient, after_sec: float
) -> None:
    """A resume whose restoring sandbox is killed from the host (kill -9 as soon as it exists,
    inside `runsc restore`, or a little later, about when the agent waits for envd and starts
    watching it): the agent restores it once more, so the resume brings it back, files and
    all; or, if the call was refused as retryable, it ends paused with its checkpoint kept (a
    second resume brings it back) or in error - in the REST API and its agent alike, never
    running without a sandbox."""
    async with start_app(reconcile_interval_sec=0.2) as rest:
        api = rest.client
        user = await new_account(api)
        capsule_id = (await make_capsule(api, user, memory_mb=256))["id"]
        await sh(api, user, capsule_id, "echo kept > ~/mark")
        directory = capsule_dir(capsule_id)
        old = _sandbox_pid(directory)
        resp = await api.post(f"/v1/capsules/{capsule_id}/pause", headers=user.h)
        assert resp.status_code == 200, resp.text

        async def restoring() -> int:
            victim = await _new_sandbox(directory, old, time.monotonic() + 30)
            await asyncio.sleep(after_sec)  # the moment of the attack, not a wait
            return victim

        resume = api.post(f"/v1/capsules/{capsule_id}/resume", headers=user.h)
        resp = await _killed_during(resume, restoring)
        # Answered: restored on the agent's second try (its checkpoint was intact: both the
        # restore cut short and the sandbox dead before envd answered are tried again), or just
        # before the kill landed. Refused only as retryable: the killed sandbox still holding
        # the disk (503), or dead by the time the call was answered (409). Never the agent's
        # own failure (502).
        assert resp.status_code in (200, 409, 503), resp.text
        if resp.status_code == 200:
            body = await _running_with_its_files_or_dead(api, user, capsule_id)
            if body["status"] == "running":
                got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=capsule_id))
                assert got.status == pb.SANDBOX_STATUS_RUNNING
                assert (await api.delete(f"/v1/capsules/{capsule_id}", headers=user.h)).is_success
                return
        else:
            body = await _paused_or_dead(api, user, capsule_id)
        if body["status"] == "error":
            assert body["status_reason"] == "sandbox exited", body
            await _gone_from_agent(agent, capsule_id)
            return
        got = await agent.get_sandbox(pb.SandboxRef(sandbox_id=capsule_id))
        assert got.status == pb.SANDBOX_STATUS_PAUSED
        await _resumes_with_its_files(api, user, capsule_id)


async def test_a_sandbox_killed_while_it_boots_fails_the_create_at_once(
    agent: AgentClient,
) -> None:
    """A cold create whose sandbox is killed before envd answers fails as soon as the sandbox
    is gone (not after envd's whole start timeout), and leaves nothing of the capsule behind."""
    sandbox_id = f"sb-{uuid.uuid4()}"
    directory = capsule_dir(sandbox_id)
    started = time.monotonic()
    create = agent.create_sandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id, memory_mb=384))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _killed_during(create, lambda: _new_sandbox(directory, None, started + 60))
    assert failed.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
    assert time.monotonic() - started < 10  # envd's start timeout is 20 s
    await _gone_from_agent(agent, sandbox_id)
    deadline = time.monotonic() + DEADLINE
    while left := traces_of(sandbox_id) + _loop_devices_of(directory):
        assert time.monotonic() < deadline, f"left on the host: {left}"
        await asyncio.sleep(0.1)
    assert not directory.exists()


async def _checkpoint_started(handle: str, deadline: float) -> None:
    while not any(
        b"checkpoint" in argv and handle.encode() in argv for _pid, argv in command_lines()
    ):
        assert time.monotonic() < deadline, f"no checkpoint of {handle} seen"
        await asyncio.sleep(0.002)


async def test_a_sandbox_killed_while_it_is_checkpointed_ends_dead_or_resumable(
    start_app: StartApp, agent: AgentClient
) -> None:
    """A pause whose sandbox is killed while runsc checkpoints it: the capsule ends in error
    (its sandbox died; nothing of it left on the host) or, if the checkpoint was complete,
    paused and resumable with its files - never paused on a broken checkpoint, never running
    without a sandbox."""
    async with start_app(reconcile_interval_sec=0.2) as rest:
        api = rest.client
        user = await new_account(api)
        capsule_id = (await make_capsule(api, user, memory_mb=256))["id"]
        await sh(api, user, capsule_id, "echo kept > ~/mark")
        directory = capsule_dir(capsule_id)
        victim = _sandbox_pid(directory)

        async def checkpointed() -> int:
            await _checkpoint_started(directory.name, time.monotonic() + 30)
            return victim

        pause = api.post(f"/v1/capsules/{capsule_id}/pause", headers=user.h)
        resp = await _killed_during(pause, checkpointed)
        assert resp.status_code in (200, 409, 502, 503), resp.text

        body = await _paused_or_dead(api, user, capsule_id)
        if body["status"] == "error":
            await _gone_from_agent(agent, capsule_id)
            deadline = time.monotonic() + DEADLINE
            while left := traces_of(capsule_id) + _loop_devices_of(directory):
                assert time.monotonic() < deadline, f"left on the host: {left}"
                await asyncio.sleep(0.1)
            return
        await _resumes_with_its_files(api, user, capsule_id)
