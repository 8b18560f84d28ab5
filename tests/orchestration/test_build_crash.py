"""A control plane killed (kill -9) in the middle of a template build: a `wrenn server` process
over the fake host agent runs the build and is killed while a step runs, or once the agent made
the template but before the answer came back. Another control plane on the same database (this
test's app) fails the build with its reason within a bounded time - never left `running` - and
leaves nothing of it on the host: the build capsule is destroyed, a template the agent made for
it is deleted, so the same build submitted again succeeds."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models.capsules import Sandbox, Template, TemplateBuild
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.jobs import build_workers

from ..controlplane.conftest import TEST_JWT_SECRET
from ..fakeagent import FakeAgentServer
from ..server_process import start_server
from ..waiting import wait_for
from .conftest import StartApp
from .helpers import new_admin

# The stale window shortened for the app taking over: what is under test is that a build
# nobody renews ends failed with nothing left behind, not how long a minute is.
STALE_SEC = 1.0


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _build(api: httpx.AsyncClient, jwt: dict[str, str], build_id: str) -> dict[str, Any]:
    resp = await api.get(f"/v1/admin/builds/{build_id}", headers=jwt)
    assert resp.status_code == 200, resp.text
    build: dict[str, Any] = resp.json()
    return build


@pytest.mark.parametrize("killed", ["mid-step", "template-made"])
async def test_a_build_whose_control_plane_was_killed_fails_and_leaves_nothing(
    start_app: StartApp,
    fake_agent: FakeAgentServer,
    db: Database,
    tmp_path: Path,
    servers: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    killed: str,
) -> None:
    env = {
        **os.environ,
        "WRENN_DATABASE_URL": db.url,
        "WRENN_AGENT_ADDRESS": fake_agent.target,
        "WRENN_AGENT_SECRET": fake_agent.secret,
        "WRENN_JWT_SECRET": TEST_JWT_SECRET,
        "WRENN_SIGNUP": "open",
        "WRENN_BUILD_WORKERS": "1",
    }
    env.pop("WRENN_REDIS_URL", None)
    data_dir = tmp_path / "killed"
    data_dir.mkdir()
    proc, url, _log = start_server(data_dir, env)
    servers.append(proc)
    name = f"crash-{killed}"
    recipe = ["RUN sleep 600"] if killed == "mid-step" else ["RUN true"]
    held = fake_agent.agent.faults.hold_reply("FlattenRootfs")
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as api:
        admin = await new_admin(api, db)
        body = {"name": name, "recipe": recipe, "skip_pre_post": True}
        resp = await api.post("/v1/admin/builds", json=body, headers=admin.jwt)
        assert resp.status_code == 201, resp.text
        build_id = resp.json()["id"]
        if killed == "mid-step":

            async def step_running() -> bool:
                build = await _build(api, admin.jwt, build_id)
                return bool(build["status"] == "running" and build["current_step"] >= 1)

            await wait_for(step_running, 60, what="the build's step running")
        else:
            await wait_for(held.arrived.wait, 60, what="the template made")
            assert name in fake_agent.agent.templates
    proc.kill()
    proc.wait()
    held.release()

    monkeypatch.setattr(build_workers, "REAP_EVERY_SEC", 0.2)
    async with start_app(build_workers=1, build_stale_after_sec=STALE_SEC) as stack:

        async def ended() -> dict[str, Any] | None:
            build = await _build(stack.client, admin.jwt, build_id)
            return build if build["status"] != "running" else None

        build = await wait_for(ended, 20, what="the build no longer running")
        assert build["status"] == "failed", build
        assert build["error"] == "interrupted: the control plane running it stopped"
        assert build["completed_at"] is not None
        capsule_id = build["sandbox_id"]
        assert capsule_id

        async def cleaned_up() -> bool:
            async with db.sessionmaker() as session:
                row = await session.get(Sandbox, ids.SANDBOX.parse(capsule_id))
            assert row is not None
            gone = capsule_id not in stack.agent.sandboxes and row.status == "stopped"
            # Nothing of it on the host: the name is free for the same build again.
            return gone and name not in stack.agent.templates

        await wait_for(cleaned_up, 20, what="the capsule destroyed and the template deleted")
        async with db.sessionmaker() as session:
            assert await session.scalar(select(Template).where(Template.name == name)) is None
        fake_agent.agent.faults.clear()
        body = {"name": name, "recipe": ["RUN true"], "skip_pre_post": True}
        again = await stack.client.post("/v1/admin/builds", json=body, headers=admin.jwt)
        assert again.status_code == 201, again.text

        async def rebuilt() -> dict[str, Any] | None:
            build = await _build(stack.client, admin.jwt, again.json()["id"])
            return build if build["status"] not in ("pending", "running") else None

        assert (await wait_for(rebuilt, 30, what="the build again"))["status"] == "success"
        assert name in stack.agent.templates


@pytest.mark.parametrize("stopped_by", ["cancel", "another process"])
async def test_a_build_stopped_while_its_template_is_made_leaves_none(
    start_app: StartApp, fake_agent: FakeAgentServer, db: Database, stopped_by: str
) -> None:
    """The agent made the template but had not answered when the build was cancelled, or
    failed by another process that took this worker for dead: the build keeps that end, and
    the template's files (no row refers to them) are deleted from the host."""
    held = fake_agent.agent.faults.hold_reply("FlattenRootfs")
    async with start_app(build_workers=1) as stack:
        api = stack.client
        admin = await new_admin(api, db)
        name = f"stopped-{stopped_by.replace(' ', '-')}"
        body = {"name": name, "recipe": ["RUN true"], "skip_pre_post": True}
        resp = await api.post("/v1/admin/builds", json=body, headers=admin.jwt)
        assert resp.status_code == 201, resp.text
        build_id = resp.json()["id"]
        await wait_for(held.arrived.wait, 30, what="the template made")
        assert name in stack.agent.templates
        if stopped_by == "cancel":
            cancel = await api.post(f"/v1/admin/builds/{build_id}/cancel", headers=admin.jwt)
            assert cancel.status_code == 200, cancel.text
            end = ("cancelled", "cancelled")
        else:
            async with db.sessionmaker() as session, session.begin():
                await session.execute(
                    update(TemplateBuild)
                    .where(TemplateBuild.id == ids.BUILD.parse(build_id))
                    .values(status="failed", error="taken over", completed_at=utcnow())
                )
            end = ("failed", "taken over")
        held.release()

        async def cleaned_up() -> bool:
            return not stack.agent.sandboxes and name not in stack.agent.templates

        await wait_for(cleaned_up, 30, what="the capsule destroyed and the template deleted")
        build = await _build(api, admin.jwt, build_id)
        assert (build["status"], build["error"]) == end
        async with db.sessionmaker() as session:
            assert await session.scalar(select(Template).where(Template.name == name)) is None
