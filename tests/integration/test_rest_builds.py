"""Template builds end to end with real capsules: a recipe with every instruction and an
uploaded archive makes an image template whose capsules start as the recipe's user with its
environment and files; a start command with a healthcheck makes a snapshot template whose
service is already running; a failing step fails the build; a running build can be cancelled;
bad input is refused and leaves nothing behind. The build capsule never outlives its build."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import User
from wrenn_server.controlplane.db.models.capsules import (
    Sandbox,
    Template,
    TemplateBuild,
    TemplateBuildArchive,
)
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.services import audit, capsules
from wrenn_server.controlplane.services.capsules import CreateCapsule
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..controlplane.helpers import assert_error
from ..waiting import wait_for
from .rest_fixtures import BASE_TEMPLATE, Account, StartApp, make_capsule, new_account, sh

pytestmark = pytest.mark.integration


async def _admin(api: httpx.AsyncClient, db: Database) -> Account:
    account = await new_account(api)
    async with db.sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.email == account.email).values(is_admin=True))
    return account


def _archive(files: dict[str, tuple[bytes, int]], extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


async def _submit(
    api: httpx.AsyncClient, admin: Account, archive: bytes | None = None, **fields: Any
) -> httpx.Response:
    if archive is None:
        return await api.post("/v1/admin/builds", json=fields, headers=admin.jwt)
    form = {k: ("\n".join(v) if isinstance(v, list) else str(v)) for k, v in fields.items()}
    return await api.post(
        "/v1/admin/builds",
        data=form,
        files={"archive": ("app.tar.gz", archive, "application/gzip")},
        headers=admin.jwt,
    )


async def _wait(
    api: httpx.AsyncClient,
    admin: Account,
    build_id: str,
    statuses: tuple[str, ...],
    timeout: float = 240,
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        resp = await api.get(f"/v1/admin/builds/{build_id}", headers=admin.jwt)
        assert resp.status_code == 200, resp.text
        build: dict[str, Any] = resp.json()
        return build if build["status"] in statuses else None

    return await wait_for(reached, timeout, interval=0.5, what=f"build status in {statuses}")


async def _build_capsule_gone(db: Database, build: dict[str, Any]) -> None:
    assert build["sandbox_id"]
    async with db.sessionmaker() as session:
        row = await session.get(Sandbox, ids.SANDBOX.parse(build["sandbox_id"]))
    assert row is not None and row.status == "stopped"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_recipe_makes_an_image_template(api: httpx.AsyncClient, rest_db: Database) -> None:
    admin = await _admin(api, rest_db)
    archive = _archive(
        {
            "app/run.sh": (b'#!/bin/sh\necho "$GREETING from $(whoami) in $(pwd)"\n', 0o755),
            "app/data/notes.txt": (b"kept\n", 0o644),
            "README": (b"top\n", 0o644),
        }
    )
    name = _name("built")
    resp = await _submit(
        api,
        admin,
        archive,
        name=name,
        recipe=[
            "# comments and blank lines are ignored",
            "",
            "ENV GREETING=hello",
            "USER builder",
            "WORKDIR /opt/app",
            "COPY app /opt/app",
            "COPY README /opt/README.txt",
            "RUN ./run.sh > out.txt",
            "RUN sudo -n touch /opt/app/sudoer && stat -c %U /opt/app/sudoer | grep -x root",
        ],
        skip_pre_post="true",
        memory_mb="512",
    )
    assert resp.status_code == 201, resp.text
    submitted = resp.json()
    assert submitted["status"] in ("pending", "running") and submitted["has_archive"]
    assert submitted["total_steps"] == 1 + 7 + 1  # default user, the recipe's 7 steps, template

    build = await _wait(api, admin, submitted["id"], ("success", "failed"))
    assert build["status"] == "success", (build["error"], build["logs"])
    assert build["result_type"] == "image"
    assert build["current_step"] == build["total_steps"] == len(build["logs"])
    assert all(entry["ok"] for entry in build["logs"])
    assert [entry["cmd"] for entry in build["logs"]][:3] == [
        "USER wrenn-user",
        "ENV GREETING=hello",
        "USER builder",
    ]
    assert (build["default_user"], build["default_env"]) == ("builder", {"GREETING": "hello"})
    await _build_capsule_gone(rest_db, build)
    async with rest_db.sessionmaker() as session:
        template = await session.scalar(select(Template).where(Template.name == name))
    assert template is not None and template.type == "base" and template.size_bytes > 0
    assert template.team_id == ids.PLATFORM_TEAM_ID
    assert template.host_id is not None  # capsules from it run where its files are

    # Any team's capsule starts from it, as its user, with its environment and files.
    user = await new_account(api)
    capsule = await make_capsule(api, user, template=name)
    out = await sh(
        api,
        user,
        capsule["id"],
        "whoami; echo $GREETING; cat /opt/app/out.txt; stat -c '%U %a' /opt/app/data/notes.txt "
        "/opt/app/run.sh; cat /opt/README.txt; ls /opt/app/sudoer",
    )
    assert out["stdout"].splitlines() == [
        "builder",
        "hello",
        "hello from builder in /opt/app",
        "builder 644",
        "builder 755",
        "top",
        "/opt/app/sudoer",
    ]
    resp = await api.get("/v1/admin/builds", headers=admin.jwt)
    assert [b["id"] for b in resp.json()] == [build["id"]]


async def test_healthcheck_makes_a_snapshot_with_the_service_running(
    api: httpx.AsyncClient, rest_db: Database
) -> None:
    admin = await _admin(api, rest_db)
    name = _name("served")
    probe = "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/')\""
    resp = await _submit(
        api,
        admin,
        name=name,
        recipe=["WORKDIR /srv", "RUN echo served > index.html"],
        start_cmd="python3 -m http.server 8000 --directory /srv",
        healthcheck=probe,
        skip_pre_post=True,
        # Not the warm pool's shape: see test_rest_snapshots.py on snapshots of pooled capsules.
        memory_mb=768,
    )
    assert resp.status_code == 201, resp.text
    build = await _wait(api, admin, resp.json()["id"], ("success", "failed"))
    assert build["status"] == "success", (build["error"], build["logs"])
    assert build["result_type"] == "snapshot"
    assert [e["cmd"].split()[0] for e in build["logs"]][-3:] == ["START", "HEALTHCHECK", "TEMPLATE"]
    await _build_capsule_gone(rest_db, build)

    user = await new_account(api)
    capsule = await make_capsule(api, user, template=name)
    # No start-up: the server was running when the snapshot was taken.
    out = await sh(
        api,
        user,
        capsule["id"],
        'python3 -c "import urllib.request; '
        "print(urllib.request.urlopen('http://127.0.0.1:8000/index.html').read().decode())\"",
    )
    assert out["stdout"].strip() == "served"


@pytest.fixture(params=["memory", "redis"])
async def queued_api(
    request: pytest.FixtureRequest, start_app: StartApp
) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose build queue is in process, or on a real Redis."""
    redis = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with start_app(redis_url=redis) as rest:
        yield rest.client


async def test_a_failing_step_fails_the_build(
    queued_api: httpx.AsyncClient, rest_db: Database
) -> None:
    api = queued_api
    admin = await _admin(api, rest_db)
    name = _name("broken")
    resp = await _submit(
        api,
        admin,
        name=name,
        recipe=["RUN echo before", "RUN echo oops >&2; exit 3", "RUN echo never"],
        skip_pre_post=True,
        memory_mb=512,
    )
    build = await _wait(api, admin, resp.json()["id"], ("success", "failed"))
    assert build["status"] == "failed"
    assert "step 3" in build["error"] and "exited with 3" in build["error"]
    last = build["logs"][-1]
    assert (last["ok"], last["exit_code"], last["stderr"]) == (False, 3, "oops\n")
    assert len(build["logs"]) == 3  # the default user, then two recipe steps
    await _build_capsule_gone(rest_db, build)
    async with rest_db.sessionmaker() as session:
        assert await session.scalar(select(Template).where(Template.name == name)) is None
    # The name is free again for a new build.
    again = await _submit(api, admin, name=name, recipe=["RUN true"], skip_pre_post=True)
    assert again.status_code == 201, again.text
    await _wait(api, admin, again.json()["id"], ("success", "failed"))


async def test_a_running_build_can_be_cancelled(api: httpx.AsyncClient, rest_db: Database) -> None:
    admin = await _admin(api, rest_db)
    resp = await _submit(
        api, admin, name=_name("slow"), recipe=["RUN sleep 600"], skip_pre_post=True, memory_mb=512
    )
    build_id = resp.json()["id"]

    async def step_running() -> bool:
        resp = await api.get(f"/v1/admin/builds/{build_id}", headers=admin.jwt)
        return int(resp.json()["current_step"]) >= 1

    await wait_for(step_running, 60, what="the first step running")
    cancelled = await api.post(f"/v1/admin/builds/{build_id}/cancel", headers=admin.jwt)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    async with rest_db.sessionmaker() as session:
        sandbox_id = (await session.get(TemplateBuild, ids.BUILD.parse(build_id))).sandbox_id  # type: ignore[union-attr]

    async def capsule_stopped() -> bool:
        async with rest_db.sessionmaker() as session:
            status = await session.scalar(select(Sandbox.status).where(Sandbox.id == sandbox_id))
        return status == "stopped"

    await wait_for(capsule_stopped, 30, what="the build's capsule stopped")

    # Cancelled at once; completed once its worker has stopped (after the capsule went).
    async def completed() -> dict[str, Any] | None:
        build: dict[str, Any] = await _wait(api, admin, build_id, ("cancelled",), timeout=1)
        return build if build["completed_at"] is not None else None

    await wait_for(completed, 30, interval=0.5, what="the cancelled build completed")
    assert_error(
        await api.post(f"/v1/admin/builds/{build_id}/cancel", headers=admin.jwt),
        409,
        "invalid_state",
    )


async def test_a_build_failed_by_another_process_stops_here(
    api: httpx.AsyncClient, rest_db: Database
) -> None:
    """Another process took this one's worker for dead and failed its build (reap_stale): the
    worker notices within a second, stops the build and keeps the row as that process left it."""
    admin = await _admin(api, rest_db)
    resp = await _submit(
        api, admin, name=_name("taken"), recipe=["RUN sleep 600"], skip_pre_post=True
    )
    build_id = ids.BUILD.parse(resp.json()["id"])

    async def step_running() -> TemplateBuild | None:
        async with rest_db.sessionmaker() as session:
            build = await session.get(TemplateBuild, build_id)
        assert build is not None
        running = build.status == "running" and build.sandbox_id is not None
        return build if running and build.current_step >= 1 else None

    build = await wait_for(step_running, 60, what="the first step running")
    # The worker's task running this build (jobs/build_workers.py).
    worker_task = f"build-{build_id}"
    assert worker_task in {t.get_name() for t in asyncio.all_tasks()}
    async with rest_db.sessionmaker() as session, session.begin():
        await session.execute(
            update(TemplateBuild)
            .where(TemplateBuild.id == build_id)
            .values(status="failed", error="taken over", completed_at=utcnow())
        )

    async def capsule_stopped() -> bool:
        async with rest_db.sessionmaker() as session:
            capsule = await session.get(Sandbox, build.sandbox_id)
        return capsule is not None and capsule.status == "stopped"

    await wait_for(capsule_stopped, 30, what="the build's capsule stopped")
    await wait_for(
        lambda: worker_task not in {t.get_name() for t in asyncio.all_tasks()},
        30,
        what="the worker finished with the build",
    )
    async with rest_db.sessionmaker() as session:
        final = await session.get(TemplateBuild, build_id)
    assert final is not None and (final.status, final.error) == ("failed", "taken over")


async def test_bad_builds_are_refused_and_leave_nothing(
    api: httpx.AsyncClient, rest_db: Database
) -> None:
    admin = await _admin(api, rest_db)
    user = await new_account(api)
    ok = {"name": _name("x"), "recipe": ["RUN true"], "skip_pre_post": True}
    assert_error(await _submit(api, user, **ok), 403, "forbidden")
    assert_error(await api.post("/v1/admin/builds", json=ok, headers=admin.h), 401, "unauthorized")
    for recipe, message in (
        (["FROM debian"], "unknown instruction"),
        (["USER Root!"], "USER"),
        (["WORKDIR relative"], "absolute"),
        (["COPY ../etc /x"], "inside the archive"),
        (["COPY app /opt/app"], "archive"),  # no archive uploaded
        (["ENV 1BAD=x"], "ENV"),
    ):
        error = assert_error(
            await _submit(api, admin, **(ok | {"recipe": recipe})), 400, "invalid_request"
        )
        assert message in error["message"], (recipe, error)
    assert_error(await _submit(api, admin, **(ok | {"name": "../etc"})), 400, "invalid_request")
    taken = await _submit(api, admin, **(ok | {"name": "minimal"}))
    assert_error(taken, 409, "template_name_taken")
    assert_error(
        await _submit(api, admin, **(ok | {"base_template": "nope"})), 400, "invalid_request"
    )
    escaping = tarfile.TarInfo("../evil")
    escaping.size = 1
    link = tarfile.TarInfo("app/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    for extra, message in (([escaping], "leaves the archive"), ([link], "not a file")):
        error = assert_error(
            await _submit(api, admin, _archive({}, extra), **(ok | {"recipe": ["COPY app /a"]})),
            400,
            "invalid_request",
        )
        assert message in error["message"]
    garbage = await _submit(api, admin, b"not an archive", **(ok | {"recipe": ["COPY a /a"]}))
    assert_error(garbage, 400, "invalid_request")
    async with rest_db.sessionmaker() as session:
        assert list(await session.scalars(select(TemplateBuild))) == []
    assert_error(
        await api.get(f"/v1/admin/builds/bld-{uuid.uuid4()}", headers=admin.jwt), 404, "not_found"
    )
    assert_error(await api.get("/v1/admin/builds/nope", headers=admin.jwt), 404, "not_found")


async def _archive_pieces(db: Database, build_id: str) -> int:
    async with db.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).where(TemplateBuildArchive.build_id == ids.BUILD.parse(build_id))
        )
    return int(count or 0)


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


async def test_a_build_submitted_to_one_control_plane_runs_on_another(
    start_app: StartApp, rest_db: Database, redis_url: str, tmp_path: Path
) -> None:
    """Two control plane processes on one database and one Redis queue: the one that takes the
    upload runs no workers, the other runs the build, reading the archive from the database."""
    receiver, runner = tmp_path / "receiver", tmp_path / "runner"
    async with (
        start_app(data_dir=receiver, build_workers=0, redis_url=redis_url) as front,
        start_app(data_dir=runner, build_workers=1, redis_url=redis_url) as back,
    ):
        admin = await _admin(front.client, rest_db)
        archive = _archive({"app/hello.txt": (b"hi from the archive\n", 0o644)})
        resp = await _submit(
            front.client,
            admin,
            archive,
            name=_name("moved"),
            recipe=["COPY app /srv/app", "RUN grep -q 'hi from the archive' /srv/app/hello.txt"],
            skip_pre_post=True,
        )
        assert resp.status_code == 201, resp.text
        build_id = resp.json()["id"]
        # Kept by the database, not on the receiver's disk.
        assert _files_under(receiver / "builds") == []
        assert await _archive_pieces(rest_db, build_id) >= 1
        build = await _wait(back.client, admin, build_id, ("success", "failed"))
        assert build["status"] == "success", build
        assert build["result_type"] == "image"
        # Gone everywhere once the build ended.
        assert await _archive_pieces(rest_db, build_id) == 0
        assert _files_under(receiver / "builds") == _files_under(runner / "builds") == []
        await _build_capsule_gone(rest_db, build)


async def test_a_build_whose_worker_went_quiet_is_failed_and_its_capsule_destroyed(
    start_app: StartApp, rest_db: Database, agent: AgentClient
) -> None:
    """What a surviving control plane does with the builds of one that died mid-build."""
    async with start_app(build_workers=1) as rest:
        capsule = await capsules.create_capsule(
            rest_db,
            rest.app.state.hosts,
            team_id=ids.PLATFORM_TEAM_ID,
            spec=CreateCapsule(template=BASE_TEMPLATE, vcpus=1, memory_mb=256, timeout_sec=0),
            actor=audit.SYSTEM,
        )
        now = utcnow()

        def build(name: str, heartbeat: dt.datetime | None, **kw: Any) -> TemplateBuild:
            return TemplateBuild(
                id=uuid.uuid4(),
                name=name,
                base_template=BASE_TEMPLATE,
                recipe=["RUN true"],
                vcpus=1,
                memory_mb=256,
                status="running",
                started_at=now - dt.timedelta(minutes=5),
                heartbeat_at=heartbeat,
                **kw,
            )

        dead = build(
            _name("dead"), now - dt.timedelta(minutes=2), sandbox_id=capsule.id, archive_sha256="0"
        )
        never_beat = build(_name("never"), None)
        alive = build(_name("alive"), now)
        async with rest_db.sessionmaker() as session, session.begin():
            session.add_all([dead, never_beat, alive])
            await session.flush()
            session.add(TemplateBuildArchive(build_id=dead.id, seq=0, data=b"x"))

        reaped = await rest.app.state.builds.workers.reap_stale()
        assert sorted(reaped) == sorted([dead.id, never_beat.id])
        async with rest_db.sessionmaker() as session:
            rows = {b.id: b for b in await session.scalars(select(TemplateBuild))}
            sandbox = await session.get(Sandbox, capsule.id)
        assert rows[dead.id].status == rows[never_beat.id].status == "failed"
        assert "stopped" in (rows[dead.id].error or "")
        assert rows[alive.id].status == "running"
        assert await _archive_pieces(rest_db, ids.BUILD.format(dead.id)) == 0
        assert sandbox is not None and sandbox.status == "stopped"
        listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
        assert ids.SANDBOX.format(capsule.id) not in {s.sandbox_id for s in listed.sandboxes}
