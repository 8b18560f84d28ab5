"""`/v1/events/stream` (and `/v1/events`): the current team's lifecycle events as server-sent
events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from ...errors import BadRequest
from ...schemas.common import error_responses
from ...services import event_hub
from ..deps import EventsDep, SettingsDep, TeamDep

router = APIRouter(prefix="/v1/events", tags=["events"])

_SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "The event stream"}
}


def _last_id(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise BadRequest("Last-Event-ID must be the id of an event this stream sent")
    return int(value)


_KINDS_HELP = (
    "Comma-separated event kinds, or prefixes of whole words (`capsule`, `template.build`, "
    "`host`), the stream carries. Default: the kinds of the published contract (capsule, "
    "snapshot and host events); template build events (`template.build.create`, `.start`, "
    "`.finish`, `.cancel`) only when asked for, since the published SDK rejects kinds it does "
    "not know."
)
KindsQuery = Annotated[str | None, Query(max_length=1024, description=_KINDS_HELP)]


async def _stream(
    team: TeamDep,
    hub: EventsDep,
    settings: SettingsDep,
    last_event_id: str | None,
    kinds: str | None,
) -> StreamingResponse:
    asked = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
    body = event_hub.sse(
        hub,
        team.team_id,
        _last_id(last_event_id),
        heartbeat=settings.events_heartbeat_sec,
        kinds=event_hub.kinds_filter(asked),
    )
    # No buffering by proxies in front (nginx honours X-Accel-Buffering).
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.get(
    "/stream",
    operation_id="streamEvents",
    summary="Stream your team's lifecycle events (server-sent events)",
    response_class=StreamingResponse,
    responses={**_SSE, **error_responses(400, 401, 403)},
)
async def stream_events(
    team: TeamDep,
    hub: EventsDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header()] = None,
    kinds: KindsQuery = None,
) -> StreamingResponse:
    """Capsule (`capsule.create`, `capsule.pause`, `capsule.resume`, `capsule.destroy`,
    `capsule.state.changed`, with the capsule in `sandbox`), snapshot
    (`template.snapshot.create`/`delete`) and host (`host.up`/`down` for the team's own hosts)
    events of the caller's team, and its template builds' events when asked for (`kinds`).
    Each message has an `id:` (increasing), an `event:` line with its kind and a `data:` line
    with the JSON body the SDK's `SSEEvent` describes. The first message is `connected`; an
    idle stream gets a `: keepalive` comment line. Send `Last-Event-ID` to receive what was
    missed since that event (kept for `WRENN_EVENTS_RETENTION_HOURS`)."""
    return await _stream(team, hub, settings, last_event_id, kinds)


@router.get(
    "",
    operation_id="streamEventsAlias",
    summary="Stream your team's lifecycle events (same as /v1/events/stream)",
    response_class=StreamingResponse,
    responses={**_SSE, **error_responses(400, 401, 403)},
)
async def stream_events_alias(
    team: TeamDep,
    hub: EventsDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header()] = None,
    kinds: KindsQuery = None,
) -> StreamingResponse:
    """The same stream as `GET /v1/events/stream`."""
    return await _stream(team, hub, settings, last_event_id, kinds)
