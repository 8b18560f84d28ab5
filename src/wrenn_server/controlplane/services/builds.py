"""Template builds as platform admins see them: submit (recipe checked, archive checked and
stored in the database, then queued), list, read, cancel. Running them is the build workers'
job (`jobs/build_workers.py`).

A build produces a platform template (visible to every team) from a platform template. Its name
may not be taken by a platform template (nor be a team's template's storage name from before
names were per team), nor by another build that has not finished. A team's template of that
name stays the team's (services/templates.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...private import open_private, private_dir
from .. import ids
from ..builds import archive, archive_store, recipe
from ..builds.queue import BuildQueue
from ..db.models.capsules import Template, TemplateBuild
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import (
    BadRequest,
    Conflict,
    InvalidState,
    NotFound,
    ServiceUnavailable,
    TooLarge,
)
from ..schemas.builds import CreateBuildRequest
from . import audit, events, snapshots, templates
from .capsules import Hosts
from .principals import Principal

log = logging.getLogger(__name__)

ACTIVE = ("pending", "running")
LIST_LIMIT = 100
COPY_CHUNK = 1 << 20


def _save_archive(upload: BinaryIO, target: Path, max_bytes: int) -> None:
    """Copy the upload to `target`, refusing more than `max_bytes`, then check its members."""
    private_dir(target.parent)  # teams' uploads: the server's eyes only
    written = 0
    with os.fdopen(open_private(target, os.O_WRONLY | os.O_TRUNC), "wb") as out:
        while chunk := upload.read(COPY_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise TooLarge(f"the archive is larger than {max_bytes >> 20} MiB")
            out.write(chunk)
    found = archive.members(target)
    if not found:
        raise BadRequest("the archive is empty")


async def record_build_event(
    session: AsyncSession,
    build: TemplateBuild,
    actor: audit.Actor,
    action: str,
    status: audit.Status = "success",
    *,
    team_id: uuid.UUID | None = None,
) -> None:
    """A platform-wide (admin scope) event about a build, named after its template. Its live
    event goes to the team it was submitted from (`team_id` when submitted, else the team of
    its first event)."""
    wire_id = ids.BUILD.format(build.id)
    metadata = {"build_id": wire_id, "status": build.status}
    if build.error and build.status != "success":
        metadata["error"] = build.error
    if team_id is None:
        team_id = await events.team_of_build(session, wire_id)
    await audit.record(
        session,
        actor=actor,
        team_id=None,
        resource_type="template",
        resource_id=build.name,
        action=action,
        scope="admin",
        status=status,
        metadata=metadata,
        event_team_id=team_id,
    )


async def forget_unrecorded_template(
    db: Database, hosts: Hosts, host_id: uuid.UUID | None, name: str
) -> None:
    """Delete from the build's host a template the agent made for a build that did not end
    with its row written (stopped, failed, its control plane dead): files no template refers
    to, which would keep the name taken on the host. Best effort, as snapshots.forget_files."""
    async with db.sessionmaker() as session:
        # Storage names are unique across the platform: any row holding it owns the files.
        kept = await session.scalar(select(Template.id).where(Template.storage_name == name))
    if kept is None:
        await snapshots.forget_files(db, hosts, host_id, name)


async def _check_free(session: AsyncSession, build: TemplateBuild) -> None:
    # A build runs in a capsule of the platform team, from a platform template.
    if await templates.platform_template(session, build.base_template) is None:
        raise BadRequest(f"base template {build.base_template!r} not found")
    await templates.check_name(session, ids.PLATFORM_TEAM_ID, build.name, overwrite=False)
    busy = await session.scalar(
        select(TemplateBuild.id).where(
            TemplateBuild.name == build.name, TemplateBuild.status.in_(ACTIVE)
        )
    )
    if busy is not None:
        raise Conflict(f"a build of {build.name!r} is already queued or running")


async def create_build(
    db: Database,
    queue: BuildQueue,
    *,
    principal: Principal,
    request: CreateBuildRequest,
    upload: BinaryIO | None,
    archives: Path,
    max_archive_bytes: int,
    default_base: str,
) -> TemplateBuild:
    steps = recipe.parse(request.recipe)
    if any(isinstance(step, recipe.Copy) for step in steps) and upload is None:
        raise BadRequest("the recipe has COPY steps: upload an archive with the build")
    build = TemplateBuild(
        id=ids.new_id(),
        name=request.name,
        base_template=request.base_template or default_base,
        recipe=list(request.recipe),
        start_cmd=request.start_cmd,
        healthcheck=request.healthcheck,
        vcpus=request.vcpus,
        memory_mb=request.memory_mb,
        skip_pre_post=request.skip_pre_post,
        status="pending",
        created_by=principal.user_id,
    )
    build.total_steps = recipe.total_steps(
        build.recipe,
        skip_pre_post=build.skip_pre_post,
        start_cmd=build.start_cmd,
        healthcheck=build.healthcheck,
    )
    # A local copy only while it is checked and stored: the database keeps the archive.
    path = archives / f"{build.id.hex}.upload"
    async with db.sessionmaker() as session, transaction(session):
        await _check_free(session, build)
    try:
        if upload is not None:
            # Outside any transaction: a slow upload must not hold the database's write lock.
            await asyncio.to_thread(_save_archive, upload, path, max_archive_bytes)
            build.archive_sha256 = await asyncio.to_thread(archive_store.sha256_of, path)
        async with db.sessionmaker() as session, transaction(session, write=True):
            await _check_free(session, build)  # again: another build may have won meanwhile
            session.add(build)
            await session.flush()
            if upload is not None:
                await archive_store.store(session, build.id, path)
            await record_build_event(
                session, build, principal.actor, "build_submit", team_id=principal.team_id
            )
    finally:
        path.unlink(missing_ok=True)
    try:
        await queue.put(build.id)
    except Exception:
        log.exception("build %s could not be queued", build.id)
        async with db.sessionmaker() as session, transaction(session, write=True):
            await archive_store.drop(session, build.id)
            await session.execute(delete(TemplateBuild).where(TemplateBuild.id == build.id))
        raise ServiceUnavailable("the build queue is unavailable; try again") from None
    return build


async def list_builds(db: Database) -> Sequence[TemplateBuild]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(TemplateBuild)
            .order_by(TemplateBuild.created_at.desc(), TemplateBuild.id.desc())
            .limit(LIST_LIMIT)
        )
        return rows.all()


async def get_build(db: Database, build_id: uuid.UUID) -> TemplateBuild:
    async with db.sessionmaker() as session:
        build = await session.get(TemplateBuild, build_id)
    if build is None:
        raise NotFound("build not found")
    return build


async def cancel_build(db: Database, *, principal: Principal, build_id: uuid.UUID) -> TemplateBuild:
    """Pending: cancelled at once. Running: marked cancelled; its worker stops it within a
    second and destroys its capsule."""
    async with db.sessionmaker() as session, transaction(session, write=True):
        build = await session.get(TemplateBuild, build_id)
        if build is None:
            raise NotFound("build not found")
        if build.status not in ACTIVE:
            raise InvalidState(f"build is {build.status}")
        if build.status == "pending":
            build.completed_at = utcnow()
            await archive_store.drop(session, build.id)
        build.status = "cancelled"
        build.error = "cancelled"
        await record_build_event(session, build, principal.actor, "build_cancel")
        return build
