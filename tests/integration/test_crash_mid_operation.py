"""kill -9 of the host agent in the middle of a pause, a resume, a snapshot and a destroy (caught
at a point the operation is seen doing its work on the host, then killed): after the agent
restarts, the API and the agent agree on the capsule, and it is in a true state - running and
answering with its file and process, paused and resuming with its file, `error`/`stopped` with
a reason, or gone after a destroy - no half-made template or checkpoint is left, and once the
capsules are destroyed nothing is left on the host (leaks.py). Either outcome of the interrupted
operation is right; a lie (listed running but not answering, paused but not resumable) is not."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import httpx
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.proc import command_lines

from ..waiting import wait_for
from .conftest import DATA_DIR, AgentProcess
from .test_crash_recovery import (
    BOOTED,
    HOME,
    ControlPlane,
    User,
    _converged,
    _create,
    _destroy_all_and_check_leaks,
    _exec,
    platform,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.integration


def _runsc_busy(handle: str) -> Callable[[], bool]:
    """Whether a process for the capsule (runsc restore/checkpoint, its sandbox) runs."""
    needle = handle.encode()

    def busy() -> bool:
        return any(
            needle in line and b"runsc" in line
            for line in (b"\0".join(argv) for _pid, argv in command_lines())
        )

    return busy


def _staging() -> list[str]:
    return [p.name for p in (DATA_DIR / "templates").iterdir() if p.name.startswith(".staging-")]


async def _true_state(api: httpx.AsyncClient, cid: str, op: str) -> str:
    """Check the capsule is what the API says; returns what it was found to be."""
    resp = await api.get(f"/v1/capsules/{cid}")
    assert resp.status_code in (200, 404), resp.text
    status = resp.json()["status"] if resp.status_code == 200 else None
    if status is None or status in ("stopped", "error"):
        if status is not None and op != "destroy":  # a destroyed one is stopped, no reason
            assert resp.json().get("status_reason"), resp.text
        return status or "gone"
    if status == "paused":
        resp = await api.post(f"/v1/capsules/{cid}/resume")
        assert resp.status_code == 200, resp.text
    got = await _exec(api, cid, f"cat {HOME}/f")
    assert got.status_code == 200 and got.json()["stdout"] == "kept\n", got.text
    return status


@pytest.mark.parametrize("op", ["pause", "resume", "snapshot", "destroy"])
async def test_agent_killed_mid_operation(
    op: str,
    platform: tuple[ControlPlane, User],  # noqa: F811
    agent_process: AgentProcess,
    agent: AgentClient,
) -> None:
    _cp, user = platform
    async with user.client() as api:
        # Another capsule, untouched by the operation: it keeps running throughout.
        other = await _create(api, **BOOTED)
        cid = await _create(api, **BOOTED)
        wrote = await _exec(api, cid, f"echo kept > {HOME}/f")
        assert wrote.status_code == 200 and wrote.json()["exit_code"] == 0, wrote.text
        if op == "resume":
            resp = await api.post(f"/v1/capsules/{cid}/pause")
            assert resp.status_code == 200, resp.text
        capsule_dir = DATA_DIR / "capsules" / cid
        name = f"crash-{secrets.token_hex(3)}"
        mid: Callable[[], object]
        if op == "pause":
            call = api.post(f"/v1/capsules/{cid}/pause")
            mid = (capsule_dir / "checkpoint.new").is_dir
        elif op == "resume":
            call = api.post(f"/v1/capsules/{cid}/resume")
            mid = _runsc_busy(cid)
        elif op == "snapshot":
            call = api.post("/v1/snapshots", json={"sandbox_id": cid, "name": name})
            mid = lambda: bool(_staging()) or (capsule_dir / "checkpoint.new").is_dir()  # noqa: E731
        else:
            call = api.delete(f"/v1/capsules/{cid}")
            mid = lambda: not (capsule_dir / "meta.json").exists() or not _runsc_busy(cid)()  # noqa: E731
        task = asyncio.create_task(call)
        try:
            await wait_for(mid, 120, interval=0.02, what=f"the {op} under way on the host")
        finally:
            agent_process.kill9()
        answer = await task
        await asyncio.to_thread(agent_process.start)
        listed = await _converged(api, agent)
        assert listed[other] == "running", listed
        found = await _true_state(api, cid, op)
        print(f"interrupted {op}: answered {answer.status_code}, then {found}")
        if op in ("pause", "snapshot"):
            # Its sandbox was not harmed: the checkpoint was kept (paused) or rolled back.
            assert found in ("running", "paused"), f"the capsule ended {found}"
        elif op != "destroy":
            assert found != "gone", "the capsule was lost"
        if op == "destroy" and answer.status_code == 204:
            assert found in ("gone", "stopped"), (answer.text, found)
        assert not _staging()
        assert not (capsule_dir / "checkpoint.new").exists()
        if op == "snapshot":
            got = await api.get(f"/v1/snapshots/{name}")
            if got.status_code == 200:  # finished: a template that starts a capsule
                made = await _create(api, template=name)
                out = await _exec(api, made, f"cat {HOME}/f")
                assert out.json()["stdout"] == "kept\n", out.text
                await api.delete(f"/v1/capsules/{made}")
                await api.delete(f"/v1/snapshots/{name}")
        await _destroy_all_and_check_leaks(api, {cid, other})
