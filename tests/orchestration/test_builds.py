"""Template builds through the REST API and the app's build workers and runner, over the fake
host agent: a recipe's steps become Exec and WriteFileStream calls in a build capsule, which ends
as an image (FlattenRootfs) or, with a healthcheck, a snapshot (CreateSnapshot); capsules of the
new template start with the recipe's files, user and environment. A failing step, an agent
failure or a cancel fails the build, and the build capsule never outlives its build."""

from __future__ import annotations

import io
import tarfile
import uuid
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models.capsules import Sandbox, Template

from ..waiting import wait_for
from .conftest import Stack, StartApp
from .helpers import Account, make_capsule, new_admin


def _archive(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def _submit(
    api: httpx.AsyncClient, admin: Account, archive: bytes | None = None, **fields: Any
) -> dict[str, Any]:
    if archive is None:
        resp = await api.post("/v1/admin/builds", json=fields, headers=admin.jwt)
    else:
        form = {k: ("\n".join(v) if isinstance(v, list) else str(v)) for k, v in fields.items()}
        archive_file = ("app.tar.gz", archive, "application/gzip")
        resp = await api.post(
            "/v1/admin/builds", data=form, files={"archive": archive_file}, headers=admin.jwt
        )
    assert resp.status_code == 201, resp.text
    build: dict[str, Any] = resp.json()
    return build


async def _wait(
    api: httpx.AsyncClient, admin: Account, build_id: str, *statuses: str
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        resp = await api.get(f"/v1/admin/builds/{build_id}", headers=admin.jwt)
        assert resp.status_code == 200, resp.text
        build: dict[str, Any] = resp.json()
        return build if build["status"] in statuses else None

    return await wait_for(reached, 30, what=f"build status in {statuses}")


async def _build_capsule_stopped(stack: Stack, build: dict[str, Any]) -> None:
    assert build["sandbox_id"]
    assert build["sandbox_id"] not in stack.agent.sandboxes

    # The destroy records the row after the agent let the capsule go: wait for that write.
    async def stopped() -> bool:
        async with stack.db.sessionmaker() as session:
            row = await session.get(Sandbox, ids.SANDBOX.parse(build["sandbox_id"]))
        assert row is not None
        return row.status == "stopped"

    await wait_for(stopped, 15, what="the build capsule's row stopped")


def _name() -> str:
    return f"built-{uuid.uuid4().hex[:8]}"


async def test_recipe_makes_an_image_template(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    admin = await new_admin(api, stack.db)
    name = _name()
    submitted = await _submit(
        api,
        admin,
        _archive({"app/run.sh": b"#!/bin/sh\n", "app/data/notes.txt": b"kept\n"}),
        name=name,
        recipe=[
            "ENV GREETING=hello",
            "USER builder",
            "WORKDIR /opt/app",
            "COPY app /opt/app",
            "RUN echo $GREETING > greeting.txt",
        ],
        memory_mb="512",
    )
    build = await _wait(api, admin, submitted["id"], "success", "failed")
    assert build["status"] == "success", (build["error"], build["logs"])
    assert build["result_type"] == "image"
    assert (build["default_user"], build["default_env"]) == ("builder", {"GREETING": "hello"})
    assert all(entry["ok"] for entry in build["logs"]), build["logs"]
    await _build_capsule_stopped(stack, build)

    template = agent.templates[name]
    assert template.type == "image" and "builder" in template.users
    assert template.files.read("/opt/app/data/notes.txt") == b"kept\n"
    assert template.files.read("/opt/app/greeting.txt") == b"hello\n"
    assert "FlattenRootfs" in agent.calls and "CreateSnapshot" not in agent.calls
    async with stack.db.sessionmaker() as session:
        row = await session.scalar(select(Template).where(Template.name == name))
    assert row is not None and row.type == "base" and row.team_id == ids.PLATFORM_TEAM_ID

    # A capsule of the new template: the recipe's files, started as its user with its env.
    cid = (await make_capsule(api, admin, template=name))["id"]
    capsule = agent.sandboxes[cid]
    assert capsule.template == name
    assert (capsule.default_user, capsule.default_env) == ("builder", {"GREETING": "hello"})
    assert capsule.files.read("/opt/app/run.sh") == b"#!/bin/sh\n"
    assert list(agent.sandboxes) == [cid]


async def test_a_healthcheck_makes_a_snapshot(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    admin = await new_admin(api, stack.db)
    name = _name()
    submitted = await _submit(
        api,
        admin,
        name=name,
        recipe=["RUN mkdir -p /srv"],
        start_cmd="touch /srv/ready",
        healthcheck="test -f /srv/ready",
    )
    build = await _wait(api, admin, submitted["id"], "success", "failed")
    assert build["status"] == "success", (build["error"], build["logs"])
    assert build["result_type"] == "snapshot"
    assert agent.templates[name].type == "snapshot"
    assert agent.templates[name].files.nodes["/srv/ready"].kind == "file"
    await _build_capsule_stopped(stack, build)
    assert agent.sandboxes == {}


async def test_recipe_start_and_run_timeout(stack: Stack) -> None:
    """The Go recipe syntax: START runs detached at its place in the recipe (as the current
    user, in the current directory), RUN --timeout cuts its step off."""
    api, agent = stack.client, stack.agent
    admin = await new_admin(api, stack.db)
    name = _name()
    submitted = await _submit(
        api,
        admin,
        name=name,
        recipe=["RUN --timeout=5m mkdir -p /srv", "WORKDIR /srv", "START touch ready"],
        healthcheck="test -f /srv/ready",
    )
    build = await _wait(api, admin, submitted["id"], "success", "failed")
    assert build["status"] == "success", (build["error"], build["logs"])
    assert build["result_type"] == "snapshot"
    assert agent.templates[name].files.nodes["/srv/ready"].kind == "file"
    cmds = [e["cmd"] for e in build["logs"]]
    assert cmds[2:6] == [
        "RUN --timeout=300s mkdir -p /srv", "WORKDIR /srv", "START touch ready", "RUN apt-get clean"
    ]  # fmt: skip
    assert cmds[6] == "HEALTHCHECK test -f /srv/ready"

    slow = await _submit(
        api, admin, name=_name(), recipe=["RUN --timeout=1s sleep 60"], skip_pre_post=True
    )
    failed = await _wait(api, admin, slow["id"], "success", "failed")
    assert failed["status"] == "failed"
    assert "RUN --timeout=1s sleep 60) timed out" in failed["error"]
    await _build_capsule_stopped(stack, failed)

    # The Go healthcheck flags: a check that keeps failing fails the build after its retries.
    unhealthy = await _submit(
        api,
        admin,
        name=_name(),
        recipe=["RUN true"],
        skip_pre_post=True,
        healthcheck="--interval=10ms --timeout=2s --retries=3 test -f /nowhere",
    )
    failed = await _wait(api, admin, unhealthy["id"], "success", "failed")
    assert (failed["status"], failed["error"]) == ("failed", "healthcheck failed 3 times")
    assert failed["logs"][-1]["attempts"] == 3
    bad = await api.post(
        "/v1/admin/builds",
        json={"name": _name(), "recipe": ["RUN true"], "healthcheck": "--every=1s true"},
        headers=admin.jwt,
    )
    assert bad.status_code == 400 and "unknown flag" in bad.json()["error"]["message"]


async def test_failing_steps_and_agent_failures_fail_the_build(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    admin = await new_admin(api, stack.db)
    failing = await _submit(api, admin, name=_name(), recipe=["RUN echo before", "RUN false"])
    build = await _wait(api, admin, failing["id"], "success", "failed")
    assert build["status"] == "failed"
    assert build["error"].endswith("(RUN false) exited with 1")
    assert build["logs"][-1]["ok"] is False and build["logs"][-1]["exit_code"] == 1
    await _build_capsule_stopped(stack, build)

    agent.faults.fail("FlattenRootfs", grpc.StatusCode.INTERNAL, "disk on fire")
    name = _name()
    broken = await _submit(api, admin, name=name, recipe=["RUN true"])
    build = await _wait(api, admin, broken["id"], "success", "failed")
    assert (build["status"], build["error"]) == ("failed", "host agent error")
    await _build_capsule_stopped(stack, build)
    assert name not in agent.templates
    async with stack.db.sessionmaker() as session:
        assert await session.scalar(select(Template).where(Template.name == name)) is None
    assert agent.sandboxes == {}


async def test_cancelling_a_running_build_destroys_its_capsule(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    admin = await new_admin(api, stack.db)
    submitted = await _submit(api, admin, name=_name(), recipe=["RUN sleep 300"])

    def sleeping() -> bool:
        return any(
            p.spec.argv[-1] == "sleep 300" and p.running
            for s in agent.sandboxes.values()
            for p in s.processes.values()
        )

    await wait_for(sleeping, what="the build's step running")
    resp = await api.post(f"/v1/admin/builds/{submitted['id']}/cancel", headers=admin.jwt)
    assert resp.status_code == 200, resp.text
    build = await _wait(api, admin, submitted["id"], "cancelled")
    await wait_for(lambda: agent.sandboxes == {}, what="the build capsule destroyed")
    await _build_capsule_stopped(stack, build)


# `wrenn up`'s database: PostgreSQL deployments share builds through Redis.
@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True, scope="session")
async def test_builds_without_redis_run_whichever_process_took_them(start_app: StartApp) -> None:
    """Two processes on one database without Redis (`wrenn up`'s workers): each has its own
    in-process queue and runs the builds it accepted; the other reports them (a build, its
    logs and its end are rows)."""
    async with start_app() as one, start_app() as two:
        admin = await new_admin(one.client, one.db)
        for took, asks in ((one, two), (two, one)):
            name = _name()
            submitted = await _submit(took.client, admin, name=name, recipe=["RUN true"])
            build = await _wait(asks.client, admin, submitted["id"], "success", "failed")
            assert build["status"] == "success", (build["error"], build["logs"])
            assert build["logs"] and all(entry["ok"] for entry in build["logs"]), build["logs"]
            assert name in one.agent.templates
