"""`/v1/teams`: the caller's teams, team management and members (user sessions only)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ... import ids
from ...db.models import Team
from ...db.session import transaction
from ...schemas.common import error_responses
from ...schemas.quotas import TeamQuotasResponse
from ...schemas.teams import (
    AddMemberRequest,
    TeamDetailResponse,
    TeamMemberResponse,
    TeamNameRequest,
    TeamParking,
    TeamResponse,
    TeamWithRoleResponse,
    UpdateRoleRequest,
)
from ...services import parking, quotas, teams
from ..deps import CurrentUser, DatabaseDep, HostsDep, SessionDep

router = APIRouter(prefix="/v1/teams", tags=["teams"])


def _team(team: Team) -> TeamResponse:
    return TeamResponse(
        id=ids.TEAM.format(team.id),
        name=team.name,
        slug=team.slug,
        is_byoc=team.is_byoc,
        created_at=team.created_at,
    )


def _with_role(team: Team, role: str) -> TeamWithRoleResponse:
    return TeamWithRoleResponse(**_team(team).model_dump(), role=role)  # type: ignore[arg-type]


def _member(view: teams.MemberView) -> TeamMemberResponse:
    return TeamMemberResponse(
        user_id=ids.USER.format(view.user.id),
        name=view.user.name,
        email=view.user.email,
        role=view.role,  # type: ignore[arg-type]
        joined_at=view.joined_at,
    )


def _no_content() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "",
    operation_id="listTeams",
    summary="List teams for the authenticated user",
    responses=error_responses(401),
)
async def list_teams(principal: CurrentUser, session: SessionDep) -> list[TeamWithRoleResponse]:
    async with transaction(session):
        views = await teams.list_my_teams(session, principal=principal)
    return [_with_role(view.team, view.role) for view in views]


@router.post(
    "",
    operation_id="createTeam",
    status_code=status.HTTP_201_CREATED,
    summary="Create a new team (the caller is its owner)",
    responses=error_responses(400, 401),
)
async def create_team(
    body: TeamNameRequest, principal: CurrentUser, session: SessionDep
) -> TeamWithRoleResponse:
    async with transaction(session, write=True):
        team = await teams.create_owned_team(session, principal=principal, name=body.name)
    return _with_role(team, "owner")


@router.get(
    "/{id}",
    operation_id="getTeam",
    summary="Get team info and member list",
    responses=error_responses(400, 401, 403, 404),
)
async def get_team(id: str, principal: CurrentUser, session: SessionDep) -> TeamDetailResponse:
    team_id = ids.TEAM.parse(id, not_found=True)
    async with transaction(session):
        team, members = await teams.team_detail(session, principal=principal, team_id=team_id)
    return TeamDetailResponse(team=_team(team), members=[_member(m) for m in members])


@router.patch(
    "/{id}",
    operation_id="renameTeam",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Rename the team (owner or admin)",
    responses=error_responses(400, 401, 403, 404),
)
async def rename_team(
    id: str, body: TeamNameRequest, principal: CurrentUser, session: SessionDep
) -> Response:
    team_id = ids.TEAM.parse(id, not_found=True)
    async with transaction(session, write=True):
        await teams.rename_team(session, principal=principal, team_id=team_id, name=body.name)
    return _no_content()


@router.delete(
    "/{id}",
    operation_id="deleteTeam",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete the team (owner only): destroys its capsules, then soft-deletes it",
    responses=error_responses(400, 401, 403, 404),
)
async def delete_team(
    id: str, principal: CurrentUser, db: DatabaseDep, hosts: HostsDep
) -> Response:
    team_id = ids.TEAM.parse(id, not_found=True)
    await teams.delete_team(db, hosts, principal=principal, team_id=team_id)
    return _no_content()


@router.get(
    "/{id}/members",
    operation_id="listTeamMembers",
    summary="List team members",
    responses=error_responses(400, 401, 403, 404),
)
async def list_members(
    id: str, principal: CurrentUser, session: SessionDep
) -> list[TeamMemberResponse]:
    team_id = ids.TEAM.parse(id, not_found=True)
    async with transaction(session):
        members = await teams.team_members(session, principal=principal, team_id=team_id)
    return [_member(m) for m in members]


@router.post(
    "/{id}/members",
    operation_id="addTeamMember",
    status_code=status.HTTP_201_CREATED,
    summary="Add a member by email (owner or admin); added at once as a member",
    responses=error_responses(400, 401, 403, 404),
)
async def add_member(
    id: str, body: AddMemberRequest, principal: CurrentUser, session: SessionDep
) -> TeamMemberResponse:
    team_id = ids.TEAM.parse(id, not_found=True)
    async with transaction(session, write=True):
        view = await teams.add_member(
            session, principal=principal, team_id=team_id, email=body.email
        )
    return _member(view)


@router.patch(
    "/{id}/members/{uid}",
    operation_id="updateMemberRole",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Update a member's role to admin or member (owner or admin)",
    responses=error_responses(400, 401, 403, 404),
)
async def update_member_role(
    id: str, uid: str, body: UpdateRoleRequest, principal: CurrentUser, session: SessionDep
) -> Response:
    team_id = ids.TEAM.parse(id, not_found=True)
    user_id = ids.USER.parse(uid, not_found=True)
    async with transaction(session, write=True):
        await teams.update_member_role(
            session, principal=principal, team_id=team_id, user_id=user_id, new_role=body.role
        )
    return _no_content()


@router.delete(
    "/{id}/members/{uid}",
    operation_id="removeTeamMember",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (owner or admin; the owner cannot be removed)",
    responses=error_responses(400, 401, 403, 404),
)
async def remove_member(id: str, uid: str, principal: CurrentUser, session: SessionDep) -> Response:
    team_id = ids.TEAM.parse(id, not_found=True)
    user_id = ids.USER.parse(uid, not_found=True)
    async with transaction(session, write=True):
        await teams.remove_member(session, principal=principal, team_id=team_id, user_id=user_id)
    return _no_content()


@router.post(
    "/{id}/leave",
    operation_id="leaveTeam",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Leave the team (the owner cannot: they delete it instead)",
    responses=error_responses(400, 401, 403, 404),
)
async def leave_team(id: str, principal: CurrentUser, session: SessionDep) -> Response:
    team_id = ids.TEAM.parse(id, not_found=True)
    async with transaction(session, write=True):
        await teams.leave_team(session, principal=principal, team_id=team_id)
    return _no_content()


@router.get(
    "/{id}/quotas",
    operation_id="getTeamQuotas",
    summary="The team's quotas and what its capsules hold now (any member)",
    responses=error_responses(400, 401, 403, 404),
)
async def get_quotas(
    id: str, principal: CurrentUser, session: SessionDep, hosts: HostsDep
) -> TeamQuotasResponse:
    team_id = ids.TEAM.parse(id, not_found=True)
    async with transaction(session):
        await teams.acting_role(session, principal, team_id)
        view = await quotas.team_quotas(session, team_id, hosts.limits)
    return TeamQuotasResponse.of(view, hosts.limits)


def _parking(policy: parking.Parking) -> TeamParking:
    return TeamParking(idle_sec=policy.idle_sec, auto_resume=policy.auto_resume)


@router.get(
    "/{id}/parking",
    operation_id="getTeamParking",
    summary="The team's parking policy: idle capsules paused, resumed on the next request "
    "(any member)",
    responses=error_responses(400, 401, 403, 404),
)
async def get_parking(id: str, principal: CurrentUser, session: SessionDep) -> TeamParking:
    team_id = ids.TEAM.parse(id, not_found=True)
    async with transaction(session):
        policy = await teams.team_parking(session, principal=principal, team_id=team_id)
    return _parking(policy)


@router.put(
    "/{id}/parking",
    operation_id="setTeamParking",
    summary="Set the team's parking policy (owner or admin); applies to capsules created after",
    responses=error_responses(400, 401, 403, 404),
)
async def set_parking(
    id: str, body: TeamParking, principal: CurrentUser, session: SessionDep
) -> TeamParking:
    team_id = ids.TEAM.parse(id, not_found=True)
    policy = parking.Parking(idle_sec=body.idle_sec, auto_resume=body.auto_resume)
    async with transaction(session, write=True):
        await teams.set_team_parking(session, principal=principal, team_id=team_id, policy=policy)
    return _parking(policy)
