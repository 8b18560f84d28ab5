"""`/v1/channels`: the current team's notification channels (webhooks for lifecycle events)."""

from __future__ import annotations

from fastapi import APIRouter, status

from ...db.session import transaction
from ...errors import BadRequest
from ...schemas.channels import (
    ChannelResponse,
    CreateChannelRequest,
    RotateConfigRequest,
    TestChannelRequest,
    TestChannelResponse,
    UpdateChannelRequest,
)
from ...schemas.common import error_responses
from ...services import channels
from ..deps import SessionDep, SettingsDep, TeamDep

router = APIRouter(prefix="/v1/channels", tags=["channels"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createChannel",
    responses=error_responses(400, 401, 403, 409),
)
async def create_channel(
    body: CreateChannelRequest, team: TeamDep, session: SessionDep, settings: SettingsDep
) -> ChannelResponse:
    """Webhook only: config `{"url": ..., "secret": ...}` (the secret is generated if left out
    and shown only in this answer). The URL must not point at loopback, link-local, private or
    metadata addresses."""
    async with transaction(session, write=True):
        channel = await channels.create(
            session,
            team.team_id,
            name=body.name,
            provider=body.provider,
            config=body.config,
            event_types=body.events,
            policy=settings.tenant_address_policy(),
        )
        return ChannelResponse.of(channel, with_secret=True)


@router.get("", operation_id="listChannels", responses=error_responses(401, 403))
async def list_channels(team: TeamDep, session: SessionDep) -> list[ChannelResponse]:
    async with transaction(session):
        return [ChannelResponse.of(c) for c in await channels.list_all(session, team.team_id)]


@router.post("/test", operation_id="testChannel", responses=error_responses(400, 401, 403))
async def test_channel(
    body: TestChannelRequest, team: TeamDep, settings: SettingsDep
) -> TestChannelResponse:
    """Sends one test message to the configuration, saving nothing; 400 if it fails."""
    outcome = await channels.send_test(body.provider, body.config, channels.Delivery.of(settings))
    if not outcome.ok:
        raise BadRequest(f"the test message was not delivered: {outcome.error}")
    return TestChannelResponse(status="ok")


@router.get("/{id}", operation_id="getChannel", responses=error_responses(401, 403, 404))
async def get_channel(id: str, team: TeamDep, session: SessionDep) -> ChannelResponse:
    async with transaction(session):
        return ChannelResponse.of(await channels.get(session, team.team_id, id))


@router.patch(
    "/{id}", operation_id="updateChannel", responses=error_responses(400, 401, 403, 404, 409)
)
async def update_channel(
    id: str, body: UpdateChannelRequest, team: TeamDep, session: SessionDep
) -> ChannelResponse:
    async with transaction(session, write=True):
        channel = await channels.update(
            session, team.team_id, id, name=body.name, event_types=body.events
        )
        return ChannelResponse.of(channel)


@router.delete(
    "/{id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteChannel",
    responses=error_responses(401, 403, 404),
)
async def delete_channel(id: str, team: TeamDep, session: SessionDep) -> None:
    async with transaction(session, write=True):
        await channels.delete(session, team.team_id, id)


@router.put(
    "/{id}/config",
    operation_id="rotateChannelConfig",
    responses=error_responses(400, 401, 403, 404),
)
async def rotate_channel_config(
    id: str, body: RotateConfigRequest, team: TeamDep, session: SessionDep, settings: SettingsDep
) -> ChannelResponse:
    """Replaces the config (URL and secret; a new secret is generated if left out, and shown)."""
    async with transaction(session, write=True):
        channel = await channels.rotate_config(
            session, team.team_id, id, body.config, settings.tenant_address_policy()
        )
        return ChannelResponse.of(channel, with_secret=True)
