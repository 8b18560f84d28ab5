"""`/v1/api-keys`: the current team's API keys."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ... import ids
from ...db.models import APIKey
from ...db.session import transaction
from ...schemas.api_keys import APIKeyResponse, CreateAPIKeyRequest
from ...schemas.common import error_responses
from ...services import api_keys
from ..deps import CurrentUser, SessionDep

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])


def _response(key: APIKey, plaintext: str | None = None) -> APIKeyResponse:
    return APIKeyResponse(
        id=ids.API_KEY.format(key.id),
        team_id=ids.TEAM.format(key.team_id),
        name=key.name,
        key_prefix=key.key_prefix,
        created_at=key.created_at,
        last_used=key.last_used,
        key=plaintext,
    )


@router.post(
    "",
    operation_id="createAPIKey",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key (the plaintext key is only shown in this response)",
    responses=error_responses(400, 401, 403),
)
async def create_api_key(
    body: CreateAPIKeyRequest, principal: CurrentUser, session: SessionDep
) -> APIKeyResponse:
    async with transaction(session, write=True):
        key, plaintext = await api_keys.create_api_key(session, principal=principal, name=body.name)
    return _response(key, plaintext)


@router.get(
    "",
    operation_id="listAPIKeys",
    summary="List API keys for your team",
    responses=error_responses(401, 403),
)
async def list_api_keys(principal: CurrentUser, session: SessionDep) -> list[APIKeyResponse]:
    async with transaction(session):
        keys = await api_keys.list_api_keys(session, principal=principal)
    return [_response(key) for key in keys]


@router.delete(
    "/{id}",
    operation_id="deleteAPIKey",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key",
    responses=error_responses(400, 401, 403, 404),
)
async def delete_api_key(id: str, principal: CurrentUser, session: SessionDep) -> Response:
    key_id = ids.API_KEY.parse(id)
    async with transaction(session, write=True):
        await api_keys.revoke_api_key(session, principal=principal, key_id=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
