"""A capsule's listening ports."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...schemas.capsule_ports import ListeningPort, PortListResponse
from ...services import capsule_ports
from ..deps import DatabaseDep, HostsDep, SettingsDep, TeamDep

router = APIRouter(prefix="/v1/capsules", tags=["capsules"])


@router.get("/{id}/ports", operation_id="listCapsulePorts")
async def list_ports(
    id: str,
    request: Request,
    team: TeamDep,
    db: DatabaseDep,
    hosts: HostsDep,
    settings: SettingsDep,
) -> PortListResponse:
    """The TCP ports listening in a running capsule, each with its URL through the port proxy
    (under WRENN_PROXY_DOMAIN, else under the host this request was sent to)."""
    ports = await capsule_ports.list_listening(
        db,
        hosts,
        team.team_id,
        id,
        scheme=request.url.scheme,
        proxy_domain=settings.proxy_domain or request.headers.get("host") or request.url.netloc,
    )
    return PortListResponse(
        ports=[ListeningPort.model_validate(p, from_attributes=True) for p in ports]
    )
