"""`wrenn up` started the README's way restarts its host agent and its control plane when either
is killed (kill -9): each comes back by itself, says so, and the platform carries on - a capsule
made before keeps its file and process, a paused one resumes, a new one can be made - and
Ctrl-C still stops everything cleanly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from wrenn_server.up import default_workers

from ..waiting import wait_until
from .conftest import Platform, control_plane_workers, running, start

HOME = "/home/wrenn-user"


def child_pid(platform: Platform, command: str) -> int | None:
    """The pid of `wrenn up`'s child running `wrenn <command>`."""
    pid = platform.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if command.encode() in argv:
            return int(child)
    return None


def exec_(api: httpx.Client, cid: str, cmd: str) -> httpx.Response:
    return api.post(f"/v1/capsules/{cid}/exec", json={"cmd": cmd, "timeout_sec": 30})


def answers(api: httpx.Client, cid: str, cmd: str, expected: str) -> bool:
    try:
        got = exec_(api, cid, cmd)
    except httpx.HTTPError:
        return False
    return got.status_code == 200 and got.json()["stdout"] == expected


def kill_and_wait_back(platform: Platform, command: str, name: str) -> None:
    pid = child_pid(platform, command)
    assert pid is not None
    told = platform.output.read_text().count(f"{name} is ready again")
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: platform.output.read_text().count(f"{name} is ready again") > told,
        60,
        interval=0.2,
        what=f"the {name} back",
    )
    assert f"{name} exited (killed by SIGKILL)" in platform.output.read_text()
    new = child_pid(platform, command)
    assert new is not None and new != pid


def test_a_killed_agent_and_control_plane_come_back_by_themselves(
    platforms: list[Platform], tmp_path: Path
) -> None:
    platform = start(tmp_path, "restarts")
    platforms.append(platform)
    key = platform.credentials()["api_key"]
    with httpx.Client(
        base_url=platform.url, headers={"X-API-Key": key}, timeout=120, trust_env=False
    ) as api:
        live, paused = (api.post("/v1/capsules", json={}).json()["id"] for _ in range(2))
        started = exec_(api, live, f"echo kept > {HOME}/f && (nohup sleep 3600 >/dev/null 2>&1 &)")
        assert started.status_code == 200 and started.json()["exit_code"] == 0, started.text
        assert exec_(api, paused, f"echo also-kept > {HOME}/f").status_code == 200
        assert api.post(f"/v1/capsules/{paused}/pause").status_code == 200
        check = f"cat {HOME}/f; pgrep -x sleep >/dev/null && echo up"

        # The agent: the control plane still running reaches the new one by itself.
        kill_and_wait_back(platform, "agent", "host agent")
        wait_until(
            lambda: answers(api, live, check, "kept\nup\n"),
            30,
            interval=0.2,
            what="the capsule through the agent",
        )

        # The control plane: back on the same port, with the same capsules. It runs a worker
        # process per core by default; those of the killed one die with it (else they would
        # keep the port), and as many new ones serve.
        workers = wait_until(
            lambda: len(found := control_plane_workers(platform)) == default_workers() and found,
            30,
            what="the control plane's workers",
        )
        # Each worker logs to the control plane's log (a spawned worker sets up its own logging).
        log = platform.data_dir / "logs/controlplane.log"
        assert log.read_text().count("Application startup complete") >= default_workers()
        kill_and_wait_back(platform, "server", "control plane")
        assert not any(running(pid) for pid in workers)
        wait_until(
            lambda: len(control_plane_workers(platform) - workers) == default_workers(),
            30,
            what="the new control plane's workers",
        )
        assert answers(api, live, check, "kept\nup\n")
        resumed = api.post(f"/v1/capsules/{paused}/resume")
        assert resumed.status_code == 200, resumed.text
        assert answers(api, paused, f"cat {HOME}/f", "also-kept\n")
        new = api.post("/v1/capsules", json={})
        assert new.status_code == 201, new.text
        assert answers(api, new.json()["id"], "echo new", "new\n")
        for cid in (live, paused, new.json()["id"]):
            assert api.delete(f"/v1/capsules/{cid}").status_code == 204

    for name in ("agent", "controlplane"):
        assert "wrenn up: " in (platform.data_dir / f"logs/{name}.log").read_text()
    platform.proc.send_signal(signal.SIGINT)
    assert platform.proc.wait(90) == 0, platform.output.read_text()
