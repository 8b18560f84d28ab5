"""`/v1/hosts`: hosts for platform admins and BYOC teams (user sessions), and the host agent's
own calls: register (registration token), heartbeat (X-Host-Token), refresh (refresh token)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.security import APIKeyHeader

from ... import ids
from ...db.session import transaction
from ...errors import BadRequest, Unauthorized
from ...schemas.common import error_responses
from ...schemas.hosts import (
    AddTagRequest,
    CreateHostRequest,
    CreateHostResponse,
    HostCredentials,
    HostDeletePreview,
    HostResponse,
    RefreshHostTokenRequest,
    RegisterHostRequest,
    valid_tag,
)
from ...services import host_credentials, host_liveness, hosts
from ...services.host_credentials import HostLifetimes, IssuedCredentials
from ...services.hosts import HostView
from ..deps import CodecDep, CurrentUser, DatabaseDep, HostsDep, SessionDep, SettingsDep

router = APIRouter(prefix="/v1/hosts", tags=["hosts"])

_host_token = APIKeyHeader(
    name="X-Host-Token",
    auto_error=False,
    scheme_name="hostTokenAuth",
    description="Host JWT from POST /v1/hosts/register or /v1/hosts/auth/refresh.",
)
HostTokenDep = Annotated[str | None, Depends(_host_token)]


async def _lifetimes(settings: SettingsDep) -> HostLifetimes:
    return HostLifetimes(
        jwt=dt.timedelta(seconds=settings.host_jwt_lifetime_sec),
        refresh=dt.timedelta(seconds=settings.host_refresh_lifetime_sec),
        registration=dt.timedelta(seconds=settings.host_registration_ttl_sec),
    )


LifetimesDep = Annotated[HostLifetimes, Depends(_lifetimes)]


def _response(view: HostView) -> HostResponse:
    return HostResponse.of(view.host, team_name=view.team_name, tags=view.tags)


def _credentials(issued: IssuedCredentials) -> HostCredentials:
    return HostCredentials(
        host=HostResponse.of(issued.host),
        token=issued.token,
        refresh_token=issued.refresh_token,
        agent_secret=issued.agent_secret,
    )


@router.post(
    "",
    operation_id="createHost",
    status_code=status.HTTP_201_CREATED,
    summary="Create a host and its one-time registration token (shared hosts: platform admins; "
    "BYOC hosts: also the team's owner or admins)",
    responses=error_responses(400, 401, 403, 404),
)
async def create_host(
    body: CreateHostRequest, principal: CurrentUser, session: SessionDep, lifetimes: LifetimesDep
) -> CreateHostResponse:
    team_id = ids.TEAM.parse(body.team_id) if body.team_id else None
    async with transaction(session, write=True):
        view, token = await hosts.create_host(
            session,
            principal=principal,
            type=body.type,
            team_id=team_id,
            provider=body.provider,
            availability_zone=body.availability_zone,
            registration_ttl=lifetimes.registration,
        )
    return CreateHostResponse(host=_response(view), registration_token=token)


@router.get(
    "",
    operation_id="listHosts",
    summary="List hosts (platform admins: all; others: their team's BYOC hosts)",
    responses=error_responses(401, 403),
)
async def list_hosts(principal: CurrentUser, session: SessionDep) -> list[HostResponse]:
    async with transaction(session):
        views = await hosts.list_hosts(session, principal=principal)
    return [_response(view) for view in views]


@router.post(
    "/register",
    operation_id="registerHost",
    status_code=status.HTTP_201_CREATED,
    summary="Register a host agent with its one-time token; returns its credentials",
    responses=error_responses(400, 401),
)
async def register_host(
    body: RegisterHostRequest,
    session: SessionDep,
    codec: CodecDep,
    lifetimes: LifetimesDep,
    settings: SettingsDep,
) -> HostCredentials:
    async with transaction(session, write=True):
        issued = await host_credentials.register_host(
            session,
            codec=codec,
            lifetimes=lifetimes,
            token=body.token,
            address=body.address,
            arch=body.arch,
            cpu_cores=body.cpu_cores,
            memory_mb=body.memory_mb,
            disk_gb=body.disk_gb,
            tls_certificate=body.tls_certificate,
            address_policy=settings.tenant_address_policy(),
        )
    return _credentials(issued)


@router.post(
    "/auth/refresh",
    operation_id="refreshHostToken",
    summary="Exchange a host refresh token for a new JWT and refresh token (the old one is "
    "revoked)",
    responses=error_responses(400, 401),
)
async def refresh_host_token(
    body: RefreshHostTokenRequest, session: SessionDep, codec: CodecDep, lifetimes: LifetimesDep
) -> HostCredentials:
    async with transaction(session, write=True):
        issued = await host_credentials.refresh_credentials(
            session, codec=codec, lifetimes=lifetimes, refresh_token=body.refresh_token
        )
    return _credentials(issued)


@router.get(
    "/{id}",
    operation_id="getHost",
    summary="Get a host",
    responses=error_responses(400, 401, 403, 404),
)
async def get_host(id: str, principal: CurrentUser, session: SessionDep) -> HostResponse:
    host_id = ids.HOST.parse(id, not_found=True)
    async with transaction(session):
        view = await hosts.get_host(session, principal=principal, host_id=host_id)
    return _response(view)


@router.delete(
    "/{id}",
    operation_id="deleteHost",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a host (409 with the capsules it runs, unless force=true destroys them)",
    responses=error_responses(400, 401, 403, 404, 409),
)
async def delete_host(
    id: str,
    principal: CurrentUser,
    db: DatabaseDep,
    capsule_hosts: HostsDep,
    force: Annotated[bool, Query(description="Destroy the host's capsules first.")] = False,
) -> Response:
    host_id = ids.HOST.parse(id, not_found=True)
    await hosts.delete_host(db, capsule_hosts, principal=principal, host_id=host_id, force=force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{id}/token",
    operation_id="regenerateHostToken",
    status_code=status.HTTP_201_CREATED,
    summary="Issue a new registration token for a host that has not registered yet",
    responses=error_responses(400, 401, 403, 404, 409),
)
async def regenerate_token(
    id: str, principal: CurrentUser, session: SessionDep, lifetimes: LifetimesDep
) -> CreateHostResponse:
    host_id = ids.HOST.parse(id, not_found=True)
    async with transaction(session, write=True):
        view, token = await hosts.regenerate_token(
            session, principal=principal, host_id=host_id, ttl=lifetimes.registration
        )
    return CreateHostResponse(host=_response(view), registration_token=token)


@router.post(
    "/{id}/heartbeat",
    operation_id="hostHeartbeat",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Host agent heartbeat (X-Host-Token of this host)",
    responses=error_responses(400, 401, 403),
)
async def heartbeat(id: str, session: SessionDep, codec: CodecDep, token: HostTokenDep) -> Response:
    if token is None:
        raise Unauthorized("missing credentials: send X-Host-Token")
    async with transaction(session, write=True):
        host = await host_credentials.authenticate_host(
            session, codec=codec, token=token, wire_id=id
        )
        await host_liveness.mark_seen(session, host)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{id}/delete-preview",
    operation_id="getHostDeletePreview",
    summary="The capsules deleting the host with force=true would destroy",
    responses=error_responses(400, 401, 403, 404),
)
async def delete_preview(id: str, principal: CurrentUser, session: SessionDep) -> HostDeletePreview:
    host_id = ids.HOST.parse(id, not_found=True)
    async with transaction(session):
        view, sandbox_ids = await hosts.delete_preview(
            session, principal=principal, host_id=host_id
        )
    return HostDeletePreview(host=_response(view), sandbox_ids=sandbox_ids)


@router.get(
    "/{id}/tags",
    operation_id="listHostTags",
    summary="List a host's tags",
    responses=error_responses(400, 401, 403, 404),
)
async def list_tags(id: str, principal: CurrentUser, session: SessionDep) -> list[str]:
    host_id = ids.HOST.parse(id, not_found=True)
    async with transaction(session):
        return await hosts.list_tags(session, principal=principal, host_id=host_id)


@router.post(
    "/{id}/tags",
    operation_id="addHostTag",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Add a tag to a host",
    responses=error_responses(400, 401, 403, 404),
)
async def add_tag(
    id: str, body: AddTagRequest, principal: CurrentUser, session: SessionDep
) -> Response:
    host_id = ids.HOST.parse(id, not_found=True)
    async with transaction(session, write=True):
        await hosts.add_tag(session, principal=principal, host_id=host_id, tag=body.tag)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/{id}/tags/{tag}",
    operation_id="removeHostTag",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a tag from a host",
    responses=error_responses(400, 401, 403, 404),
)
async def remove_tag(id: str, tag: str, principal: CurrentUser, session: SessionDep) -> Response:
    host_id = ids.HOST.parse(id, not_found=True)
    if not valid_tag(tag):
        raise BadRequest("invalid tag")
    async with transaction(session, write=True):
        await hosts.remove_tag(session, principal=principal, host_id=host_id, tag=tag)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
