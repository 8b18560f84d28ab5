"""Snapshot templates: made from a team's capsule under a name of the team's own (the
platform's names are reserved; services/templates.py), listed with the platform's templates,
deleted only by their team (platform templates only by admins). Both are audited
(resource_type `snapshot`, resource_id the template name) in the transaction that records them;
the host agents are told the template's storage name, never its name."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..agents import call_timeouts
from ..agents.rpc import agent_errors
from ..db.models.capsules import Sandbox, Template
from ..db.models.hosts import Host
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import (
    Conflict,
    DomainError,
    Forbidden,
    HostUnavailable,
    InsufficientCapacity,
    NotFound,
)
from . import audit, templates
from .capsules import Hosts, get_capsule, require_status

log = logging.getLogger(__name__)


async def list_templates(db: Database, team_id: uuid.UUID, type_: str | None) -> list[Template]:
    async with db.sessionmaker() as session:
        query = select(Template).where(
            or_(Template.team_id == team_id, Template.team_id == ids.PLATFORM_TEAM_ID)
        )
        if type_:
            query = query.where(Template.type == type_)
        return list(await session.scalars(query.order_by(Template.created_at)))


async def create_snapshot(
    db: Database,
    hosts: Hosts,
    *,
    team_id: uuid.UUID,
    wire_id: str,
    name: str | None,
    overwrite: bool,
    actor: audit.Actor,
) -> Template:
    """Snapshot a capsule of the team into the team's template `name` (a platform template for
    the platform team); with `overwrite`, the team's template of that name is replaced."""
    name = name or ids.new_snapshot_name()
    async with db.sessionmaker() as session, transaction(session, write=True):
        sandbox = await get_capsule(session, team_id, wire_id)
        require_status(sandbox, "running", "paused")
        existing = await templates.check_name(session, team_id, name, overwrite=overwrite)
        new_id = ids.new_id()
        stored_as = (
            existing.storage_name
            if existing is not None
            else templates.storage_name(team_id, name, new_id)
        )
        replaced_on = existing.host_id if existing is not None else None
        client = await hosts.client_for(session, sandbox)
        previous = sandbox.status
        # Paused before the agent call: the capsule leaves the agent's running set during the
        # snapshot, and the reconciler must not take it for gone.
        sandbox.status = "paused"
        sandbox.last_updated = utcnow()
    request = pb.CreateSnapshotRequest(sandbox_id=wire_id, name=stored_as, overwrite=overwrite)
    try:
        # Out of room here is the host's (its disk, its memory for a resume), not the
        # capsule's: 503 like a create or resume.
        with agent_errors(exhausted=InsufficientCapacity):
            made = await client.create_snapshot(request, timeout=call_timeouts.SNAPSHOT_TIMEOUT)
    except BaseException:
        async with db.sessionmaker() as session, transaction(session, write=True):
            row = await session.get(Sandbox, sandbox.id)
            if row is not None and row.status == "paused":
                row.status = previous
        raise
    try:
        template, replaced = await _record_snapshot(
            db, sandbox, team_id, name, stored_as, new_id, made.size_bytes, overwrite, actor
        )
    except DomainError:
        # Another request took the name meanwhile: these files (under a storage name of their
        # own; a platform template's is its name, which the winner's files may have) are no
        # template's.
        if stored_as != name:
            await forget_files(db, hosts, sandbox.host_id, stored_as)
        raise
    if replaced is not None and replaced != (sandbox.host_id, stored_as):
        await forget_files(db, hosts, *replaced)
    elif replaced_on is not None and replaced_on != sandbox.host_id:
        await forget_files(db, hosts, replaced_on, stored_as)
    return template


async def _record_snapshot(
    db: Database,
    sandbox: Sandbox,
    team_id: uuid.UUID,
    name: str,
    stored_as: str,
    new_id: uuid.UUID,
    size_bytes: int,
    overwrite: bool,
    actor: audit.Actor,
) -> tuple[Template, tuple[uuid.UUID | None, str] | None]:
    """The snapshot's row (a new one, or the replaced template's updated), checked again under
    the team's lock: the name may have been taken while the agent worked. Also returns where
    the files of a template replaced in between are (host, storage name)."""
    async with db.sessionmaker() as session, transaction(session, write=True):
        await templates.lock_names(session, team_id)
        template = await templates.check_name(session, team_id, name, overwrite=overwrite)
        replaced: tuple[uuid.UUID | None, str] | None = None
        if template is None:
            template = Template(id=new_id, name=name, team_id=team_id, type="snapshot")
            template.storage_name = stored_as
            session.add(template)
        elif template.storage_name != stored_as:
            replaced = (template.host_id, template.storage_name)
            template.storage_name = stored_as
        template.type = "snapshot"
        template.vcpus, template.memory_mb = sandbox.vcpus, sandbox.memory_mb
        template.size_bytes = size_bytes
        template.host_id = sandbox.host_id
        template.created_at = utcnow()
        template.meta = dict(sandbox.meta or {})
        base = await templates.by_id(session, sandbox.template_id)
        if base is not None:
            template.default_user, template.default_env = base.default_user, base.default_env
        await audit.record(
            session,
            actor=actor,
            team_id=team_id,
            resource_type="snapshot",
            resource_id=name,
            action="create",
            metadata={
                "sandbox_id": ids.SANDBOX.format(sandbox.id),
                "overwrite": overwrite,
                "size_bytes": size_bytes,
            },
        )
    return template, replaced


async def forget_files(
    db: Database, hosts: Hosts, host_id: uuid.UUID | None, stored_as: str
) -> None:
    """Files no template refers to any more (an overwritten template's on the host that held
    it before; a snapshot that lost its name to another request), deleted best effort: what
    cannot be is logged."""
    async with db.sessionmaker() as session:
        host = await session.get(Host, host_id) if host_id is not None else None
    if host is None or host.status != "online" or not host.address:
        log.warning("template files %r stay on host %s", stored_as, host_id)
        return
    try:
        client = await hosts.client_of(host)
        with agent_errors():
            await client.delete_snapshot(pb.DeleteSnapshotRequest(name=stored_as))
    except NotFound:
        pass
    except DomainError as e:
        log.warning("template files %r stay on host %s (%s)", stored_as, host_id, e)


async def delete_snapshot(
    db: Database,
    hosts: Hosts,
    *,
    team_id: uuid.UUID | None,
    name: str,
    is_admin: bool,
    actor: audit.Actor,
    protected: str | None = None,
    owner: uuid.UUID | None = None,
) -> None:
    """Delete a template: its files on the hosts that hold them first, then its row.

    `team_id` is the caller's team, whose own and the platform's templates it may delete (the
    name means its own first); None (platform admins only) reaches any team's template - the
    `owner`'s, or the only one of that name - and the event is then recorded in the template's
    team with scope `admin`. `protected` names a platform template no one may delete (the
    platform's base template, which capsule creation falls back to): 409.

    Only the template's holders (`holders`) hear of it: no other team's host learns its name,
    and none can hold up its deletion. If a holder cannot delete the files the row stays, so
    the delete can be retried (502, or 503 while the holder is down).
    """
    if team_id is None and not is_admin:
        raise Forbidden("only platform admins may delete another team's template")
    async with db.sessionmaker() as session:
        if team_id is None:
            template = await templates.any_team(session, name, owner)
        else:
            found = await templates.find_visible(session, team_id, name)
            if found is None:
                raise NotFound(f"template {name!r} not found")
            template = found
        platform = template.team_id == ids.PLATFORM_TEAM_ID
        if platform and not is_admin:
            raise Forbidden("platform templates can only be deleted by platform admins")
        if platform and protected is not None and name == protected:
            raise Conflict(
                f"{name!r} is the platform's base template: capsules are created from it"
            )
        holding = await holders(session, template)
        template_id, stored_as = template.id, template.storage_name
    # The files must go first: if a holder cannot delete them, the record stays.
    for host in holding:
        client = await hosts.client_of(host)
        try:
            with agent_errors():
                await client.delete_snapshot(pb.DeleteSnapshotRequest(name=stored_as))
        except NotFound:
            pass  # that host never had it
    async with db.sessionmaker() as session, transaction(session, write=True):
        row = await session.get(Template, template_id)
        if row is not None:
            await session.delete(row)
            await audit.record(
                session,
                actor=actor,
                team_id=team_id if team_id is not None else row.team_id,
                resource_type="snapshot",
                resource_id=name,
                action="delete",
                # A platform template is the platform's business, not the team's members'.
                scope="admin" if platform or team_id is None else "team",
                metadata={"platform": platform},
            )


async def holders(session: AsyncSession, template: Template) -> list[Host]:
    """The hosts that hold a template's files: the one recorded with it (a snapshot or built
    image; 503 while it is not online), else - the base template, or a row from before
    templates recorded their host - the online hosts where the template's capsules could have
    run: shared hosts, and the team's own for a team's template. Never another team's host."""
    if template.host_id is not None:
        host = await session.get(Host, template.host_id)
        if host is None:
            return []  # deleting a host deletes its templates: only a race gets here
        if host.status not in ("online", "draining") or not host.address:
            raise HostUnavailable(
                f"the host holding template {template.name!r} is not reachable: try again later"
            )
        return [host]
    may_run = Host.type == "regular"
    if template.team_id != ids.PLATFORM_TEAM_ID:
        may_run = or_(may_run, and_(Host.type == "byoc", Host.team_id == template.team_id))
    query = select(Host).where(Host.status == "online", Host.address.is_not(None), may_run)
    return list(await session.scalars(query.order_by(Host.created_at, Host.id)))
