"""`/v1/admin`: platform administration (platform admins' user sessions only).

Every route depends on `CurrentAdmin`, which re-reads `is_admin` from the database on each call.
Malformed ids and filters are 400; a team that does not exist (or is deleted) is 404.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from ... import ids
from ...db.session import transaction
from ...errors import BadRequest
from ...schemas.admin import (
    AdminAccount,
    AdminCapsule,
    AdminTeam,
    AdminTeamPage,
    AdminTemplate,
    AdminUser,
    AdminUserPage,
    Page,
    SetBYOCRequest,
)
from ...schemas.common import error_responses
from ...schemas.quotas import QuotaOverrides, TeamQuotasResponse
from ...services import admin, admin_teams, quotas, snapshots
from ..deps import CurrentAdmin, DatabaseDep, HostsDep, SessionDep, SettingsDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])

# The names snapshots can be given (CreateSnapshotRequest); base templates follow it too.
_TEMPLATE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# The Go system's page size of its admin lists.
PER_PAGE = 100
PageNumber = Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number.")]

TeamFilter = Annotated[
    str | None, Query(max_length=64, description="Only this team's (team-<uuid>).")
]


def _team_filter(team_id: str | None) -> uuid.UUID | None:
    return ids.TEAM.parse(team_id) if team_id is not None else None


@router.get(
    "/teams",
    operation_id="adminListTeams",
    summary="A page of every team (deleted ones last) with its owner, member and capsule counts "
    "and quotas (platform admins)",
    responses=error_responses(400, 401, 403),
)
async def list_teams(
    principal: CurrentAdmin, session: SessionDep, hosts: HostsDep, page: PageNumber = 1
) -> AdminTeamPage:
    async with transaction(session):
        rows, total = await admin_teams.list_teams(
            session, limit=PER_PAGE, offset=(page - 1) * PER_PAGE
        )
        team_quotas = await quotas.all_team_quotas(session, hosts.limits)
    untouched = quotas.TeamQuotas(hosts.limits, quotas.Overrides(), quotas.Usage())
    return AdminTeamPage(
        teams=[
            AdminTeam(
                id=ids.TEAM.format(r.team.id),
                name=r.team.name,
                slug=r.team.slug,
                is_byoc=r.team.is_byoc,
                created_at=r.team.created_at,
                deleted_at=r.team.deleted_at,
                member_count=r.member_count,
                owner_name=r.owner_name,
                owner_email=r.owner_email,
                active_sandbox_count=r.active_capsule_count,
                channel_count=r.channel_count,
                quotas=TeamQuotasResponse.of(team_quotas.get(r.team.id, untouched), hosts.limits),
            )
            for r in rows
        ],
        **Page.numbers(total, page, PER_PAGE),
    )


@router.delete(
    "/teams/{id}",
    operation_id="adminDeleteTeam",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a team (platform admins): its capsules are destroyed, its templates "
    "deleted, its API keys revoked and its members removed; the platform team cannot be",
    responses=error_responses(400, 401, 403, 404),
)
async def delete_team(
    id: str, principal: CurrentAdmin, db: DatabaseDep, hosts: HostsDep, settings: SettingsDep
) -> Response:
    team_id = ids.TEAM.parse(id)
    await admin_teams.delete_team(
        db,
        hosts,
        actor=principal.actor,
        team_id=team_id,
        protected_template=settings.base_template,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/teams/{id}/byoc",
    operation_id="adminSetTeamBYOC",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Allow or stop a team from registering its own hosts (platform admins)",
    responses=error_responses(400, 401, 403, 404),
)
async def set_byoc(
    id: str, body: SetBYOCRequest, principal: CurrentAdmin, session: SessionDep
) -> Response:
    team_id = ids.TEAM.parse(id)
    async with transaction(session, write=True):
        await admin.set_byoc(session, actor=principal.actor, team_id=team_id, enabled=body.enabled)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/teams/{id}/quotas",
    operation_id="adminGetTeamQuotas",
    summary="A team's quotas, its own limits and what its capsules hold (platform admins)",
    responses=error_responses(400, 401, 403, 404),
)
async def get_team_quotas(
    id: str, principal: CurrentAdmin, session: SessionDep, hosts: HostsDep
) -> TeamQuotasResponse:
    team_id = ids.TEAM.parse(id)
    async with transaction(session):
        view = await quotas.admin_team_quotas(session, team_id, hosts.limits)
    return TeamQuotasResponse.of(view, hosts.limits)


@router.put(
    "/teams/{id}/quotas",
    operation_id="adminSetTeamQuotas",
    summary="Set a team's own limits; null (or left out) keeps the platform default "
    "(platform admins)",
    responses=error_responses(400, 401, 403, 404),
)
async def set_team_quotas(
    id: str, body: QuotaOverrides, principal: CurrentAdmin, session: SessionDep, hosts: HostsDep
) -> TeamQuotasResponse:
    team_id = ids.TEAM.parse(id)
    async with transaction(session, write=True):
        view = await quotas.set_overrides(
            session,
            actor=principal.actor,
            team_id=team_id,
            overrides=body.domain(),
            defaults=hosts.limits,
        )
    return TeamQuotasResponse.of(view, hosts.limits)


@router.get(
    "/templates",
    operation_id="adminListTemplates",
    summary="List the templates of every team and the platform's (platform admins)",
    responses=error_responses(400, 401, 403),
)
async def list_templates(
    principal: CurrentAdmin,
    session: SessionDep,
    settings: SettingsDep,
    team_id: TeamFilter = None,
) -> list[AdminTemplate]:
    team = _team_filter(team_id)
    async with transaction(session):
        templates = await admin.list_templates(session, team)
    return [AdminTemplate.of_admin(t, base_template=settings.base_template) for t in templates]


@router.delete(
    "/templates/{name}",
    operation_id="adminDeleteTemplate",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete any team's template or a platform one: its files on the hosts holding "
    "them, then its record (platform admins; the base template cannot be deleted)",
    responses=error_responses(400, 401, 403, 404, 409),
)
async def delete_template(
    name: str,
    principal: CurrentAdmin,
    db: DatabaseDep,
    hosts: HostsDep,
    settings: SettingsDep,
    team_id: Annotated[
        str | None,
        Query(
            description="The owning team (`team_id` of the listing), where several teams "
            "have a template of that name; the platform's is the all-zeros team."
        ),
    ] = None,
) -> Response:
    if not _TEMPLATE_NAME_RE.fullmatch(name):
        raise BadRequest("invalid template name")
    await snapshots.delete_snapshot(
        db,
        hosts,
        team_id=None,
        name=name,
        is_admin=True,
        actor=principal.actor,
        protected=settings.base_template,
        owner=_team_filter(team_id),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/capsules",
    operation_id="adminListCapsules",
    summary="List the capsules of every team, newest first (platform admins)",
    responses=error_responses(400, 401, 403),
)
async def list_capsules(
    principal: CurrentAdmin, session: SessionDep, team_id: TeamFilter = None
) -> list[AdminCapsule]:
    team = _team_filter(team_id)
    async with transaction(session):
        capsules = await admin.list_capsules(session, team)
    return [AdminCapsule.of_admin(c) for c in capsules]


@router.get(
    "/users",
    operation_id="adminListUsers",
    summary="A page of every account, newest first, with the teams each is in and owns "
    "(platform admins)",
    responses=error_responses(400, 401, 403),
)
async def list_users(
    principal: CurrentAdmin, session: SessionDep, page: PageNumber = 1
) -> AdminUserPage:
    async with transaction(session):
        rows, total = await admin.list_users(session, limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
    return AdminUserPage(
        users=[
            AdminUser(
                **(
                    AdminAccount.of(r.user).model_dump()
                    | ({"status": "inactive"} if r.awaiting_activation else {})
                ),
                teams_joined=r.teams_joined,
                teams_owned=r.teams_owned,
            )
            for r in rows
        ],
        **Page.numbers(total, page, PER_PAGE),
    )
