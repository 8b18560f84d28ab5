"""kill -9 of the control plane (`wrenn server`, its own process) while it runs a template build
in a real gVisor capsule: restarted on the same database, it fails the build with its reason
within the stale-build window (never left `running`), destroys the build capsule and leaves
nothing of the build on the host - no template, no capsule resources (leaks.py)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from typing import Any

import httpx
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane.jobs.build_workers import REAP_EVERY_SEC
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..waiting import wait_for
from .conftest import DATA_DIR
from .leaks import leaks
from .test_crash_recovery import ControlPlane, User, _agent_ids, platform  # noqa: F401

pytestmark = pytest.mark.integration

STALE_SEC = 10.0  # twice the workers' renewal interval


async def _admin_jwt(cp: ControlPlane) -> dict[str, str]:
    email, password = f"builder-{secrets.token_hex(4)}@example.com", "x" * 12
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "wrenn_server.cli", "admin", "create-user", "--email", email,
         "--name", "Builder", "--password", password, "--admin", "--data-dir", str(cp.data_dir)],
        env=cp.env, capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    async with httpx.AsyncClient(base_url=cp.url, trust_env=False, timeout=60) as http:
        resp = await http.post("/v1/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def _build(cp: ControlPlane, jwt: dict[str, str], build_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=cp.url, trust_env=False, timeout=60) as http:
        resp = await http.get(f"/v1/admin/builds/{build_id}", headers=jwt)
    assert resp.status_code == 200, resp.text
    build: dict[str, Any] = resp.json()
    return build


async def test_control_plane_killed_mid_build_and_restarted(
    platform: tuple[ControlPlane, User],  # noqa: F811
    agent: AgentClient,
) -> None:
    cp, _user = platform
    jwt = await _admin_jwt(cp)
    name = f"crashed-{secrets.token_hex(4)}"
    body = {"name": name, "recipe": ["RUN sleep 600"], "skip_pre_post": True}
    async with httpx.AsyncClient(base_url=cp.url, trust_env=False, timeout=60) as http:
        resp = await http.post("/v1/admin/builds", json=body, headers=jwt)
    assert resp.status_code == 201, resp.text
    build_id = resp.json()["id"]

    async def step_running() -> dict[str, Any] | None:
        build = await _build(cp, jwt, build_id)
        running = build["status"] == "running" and build["current_step"] >= 1
        return build if running else None

    build = await wait_for(step_running, 120, interval=0.5, what="the build's step running")
    capsule_id = build["sandbox_id"]
    assert capsule_id in await _agent_ids(agent)

    await asyncio.to_thread(cp.kill9)
    # Restarted with a short window (the product's 60 s would be most of the test).
    cp.env["WRENN_BUILD_STALE_AFTER_SEC"] = str(STALE_SEC)
    await asyncio.to_thread(cp.start)

    async def ended() -> dict[str, Any] | None:
        build = await _build(cp, jwt, build_id)
        return build if build["status"] != "running" else None

    # Renewed at most 5 s before the kill, stale after STALE_SEC, seen by the next pass.
    within = STALE_SEC + REAP_EVERY_SEC + 30
    build = await wait_for(ended, within, interval=1, what="the build no longer running")
    assert build["status"] == "failed", build
    assert build["error"] == "interrupted: the control plane running it stopped"

    async def cleaned_up() -> bool:
        held = await _agent_ids(agent)
        templates = await agent.list_templates(pb.Empty())
        return capsule_id not in held and name not in {t.name for t in templates.templates}

    await wait_for(cleaned_up, 60, interval=0.5, what="the build capsule destroyed")
    try:
        await wait_for(lambda: not leaks(DATA_DIR, {capsule_id}), 60, interval=0.5, what="no leaks")
    except AssertionError as e:
        raise AssertionError(f"{e}: {leaks(DATA_DIR, {capsule_id})}") from None
