"""Preview links: a URL that opens one port of a capsule in a browser, for a while."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Body, Path, Request

from ...db.session import transaction
from ...schemas.capsules import PREVIEW_TTL_SEC, PortURL, PortURLRequest
from ...services import proxy_access
from ..deps import CodecDep, SessionDep, SettingsDep, TeamDep

router = APIRouter(prefix="/v1/capsules", tags=["capsules"])


@router.post("/{id}/ports/{port}/url", operation_id="createPortURL")
async def create_port_url(
    id: str,
    port: Annotated[int, Path(ge=1, le=65535)],
    request: Request,
    team: TeamDep,
    session: SessionDep,
    codec: CodecDep,
    settings: SettingsDep,
    body: Annotated[PortURLRequest | None, Body()] = None,
) -> PortURL:
    """A link that opens `port` of the capsule in a browser until `expires_at`: the port proxy
    keeps its token as a cookie for that port's host only. Anyone holding the link can use it
    until then, or until whoever made it loses access to the team."""
    lifetime = dt.timedelta(seconds=body.ttl_seconds if body else PREVIEW_TTL_SEC)
    async with transaction(session):
        token, expires = await proxy_access.issue(
            session, codec, team.principal, id, port, lifetime
        )
    domain = settings.proxy_domain or request.headers.get("host") or request.url.netloc
    url = (
        f"{request.url.scheme}://{port}-{id.lower()}.{domain}/?{proxy_access.PREVIEW_PARAM}={token}"
    )
    return PortURL(url=url, port=port, expires_at=expires)
