"""E2B's control API for sandboxes (what the stock `e2b` SDK calls), on the capsule services.
Thin: parse, call one service, convert. Errors on these paths are E2B's `{"code", "message"}`
(api/e2b_errors.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status

from ... import ids
from ...schemas import e2b as wire
from ...services import e2b_lifecycle as lifecycle
from ...services import e2b_sandboxes as svc
from ...services import e2b_snapshots
from ..deps import CodecDep, DatabaseDep, HostsDep, SettingsDep, TeamDep

router = APIRouter(tags=["e2b"], include_in_schema=False)


async def _site(codec: CodecDep, settings: SettingsDep) -> svc.Site:
    return svc.Site(codec, settings.base_template, settings.proxy_domain)


SiteDep = Annotated[svc.Site, Depends(_site)]


def _sandbox(reached: svc.Reached) -> wire.Sandbox:
    return wire.Sandbox(
        sandbox_id=reached.wire_id,
        template_id=reached.template,
        client_id=svc.CLIENT_ID,
        envd_version=svc.ENVD_VERSION,
        envd_access_token=reached.envd_token,
        traffic_access_token=reached.traffic_token,
        domain=reached.domain,
    )


def _fields(found: svc.Listed) -> dict[str, object]:
    s = found.sandbox
    return {
        "sandbox_id": ids.SANDBOX.format(s.id),
        "template_id": s.template,
        "client_id": svc.CLIENT_ID,
        "started_at": s.started_at or s.created_at,
        "end_at": found.end_at,
        "cpu_count": s.vcpus,
        "memory_mb": s.memory_mb,
        "disk_size_mb": s.disk_size_mb,
        "state": found.state,
        "envd_version": svc.ENVD_VERSION,
        "metadata": dict(s.meta or {}),
    }


def _listed(found: svc.Listed) -> wire.ListedSandbox:
    return wire.ListedSandbox.model_validate(_fields(found))


def _detail(found: svc.Listed, domain: str | None) -> wire.SandboxDetail:
    return wire.SandboxDetail.model_validate(
        {
            **_fields(found),
            "envd_access_token": found.envd_token,
            "domain": domain,
            "lifecycle": wire.Lifecycle(
                on_timeout=found.on_timeout,  # type: ignore[arg-type]
                auto_resume=found.sandbox.auto_resume,
            ),
        }
    )


def _metric(m: e2b_snapshots.Metric) -> wire.SandboxMetric:
    return wire.SandboxMetric(
        timestamp=m.ts,
        timestamp_unix=int(m.ts.timestamp()),
        cpu_count=m.vcpus,
        cpu_used_pct=m.cpu_pct,
        mem_used=m.mem_used,
        mem_cache=0,
        mem_total=m.mem_total,
        disk_used=m.disk_used,
        disk_total=m.disk_total,
    )


def _new(body: wire.NewSandbox) -> svc.NewSandbox:
    asked = {
        "mcp": body.mcp,
        "network": body.network,
        "volumeMounts": body.volume_mounts,
        "iam": body.iam,
    }
    return svc.NewSandbox(
        template=body.template_id,
        timeout_sec=body.timeout,
        auto_pause=body.auto_pause,
        auto_resume=bool(body.auto_resume and body.auto_resume.enabled),
        metadata=body.metadata or {},
        env=body.env_vars or {},
        allow_internet_access=body.allow_internet_access,
        unsupported=tuple(k for k, v in asked.items() if v),
    )


@router.post("/sandboxes", status_code=status.HTTP_201_CREATED, response_model_exclude_none=True)
@router.post("/v2/sandboxes", status_code=status.HTTP_201_CREATED, response_model_exclude_none=True)
async def create_sandbox(
    body: wire.NewSandbox, team: TeamDep, db: DatabaseDep, hosts: HostsDep, site: SiteDep
) -> wire.Sandbox:
    made = await svc.create(
        db, hosts, site, team_id=team.team_id, spec=_new(body), actor=team.principal.actor
    )
    return _sandbox(made)


@router.get("/v2/sandboxes")
async def list_sandboxes_v2(
    team: TeamDep,
    db: DatabaseDep,
    site: SiteDep,
    response: Response,
    metadata: str | None = None,
    state: Annotated[list[str] | None, Query()] = None,
    template: str | None = None,
    started_after: Annotated[dt.datetime | None, Query(alias="startedAfter")] = None,
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int | None, Query(ge=1, le=svc.MAX_LIMIT)] = None,
    next_token: Annotated[str | None, Query(alias="nextToken")] = None,
) -> list[wire.ListedSandbox]:
    page = await svc.list_page(
        db,
        site,
        team.team_id,
        states=svc.parse_states(state),
        metadata=svc.parse_metadata_query(metadata),
        template=template,
        started_after=started_after,
        order=order,
        limit=limit,
        next_token=next_token,
    )
    if page.next_token:
        response.headers["X-Next-Token"] = page.next_token
    return [_listed(found) for found in page.items]


@router.get("/sandboxes")
async def list_sandboxes(
    team: TeamDep, db: DatabaseDep, site: SiteDep, metadata: str | None = None
) -> list[wire.ListedSandbox]:
    """E2B's first list: the running ones, unpaged."""
    page = await svc.list_page(
        db,
        site,
        team.team_id,
        states=["running"],
        metadata=svc.parse_metadata_query(metadata),
        unpaged=True,
    )
    return [_listed(found) for found in page.items]


@router.get("/sandboxes/metrics")
async def batch_metrics(
    team: TeamDep,
    db: DatabaseDep,
    hosts: HostsDep,
    sandbox_ids: Annotated[list[str], Query()],
) -> wire.SandboxesWithMetrics:
    wanted = [s.strip() for v in sandbox_ids for s in v.split(",") if s.strip()]
    found = await e2b_snapshots.latest_metrics(db, hosts, team.team_id, wanted)
    return wire.SandboxesWithMetrics(sandboxes={k: _metric(m) for k, m in found.items()})


@router.get("/sandboxes/{sandbox_id}", response_model_exclude_none=True)
async def get_sandbox(
    sandbox_id: str, team: TeamDep, db: DatabaseDep, site: SiteDep
) -> wire.SandboxDetail:
    return _detail(await svc.get(db, site, team.team_id, sandbox_id), site.domain)


@router.delete("/sandboxes/{sandbox_id}", status_code=status.HTTP_204_NO_CONTENT)
async def kill_sandbox(sandbox_id: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep) -> None:
    await svc.kill(db, hosts, team.team_id, sandbox_id, actor=team.principal.actor)


@router.post("/sandboxes/{sandbox_id}/timeout", status_code=status.HTTP_204_NO_CONTENT)
async def set_timeout(
    sandbox_id: str, body: wire.TimeoutRequest, team: TeamDep, db: DatabaseDep
) -> None:
    await lifecycle.set_timeout(
        db, team.team_id, sandbox_id, body.timeout, actor=team.principal.actor
    )


@router.post("/sandboxes/{sandbox_id}/refreshes", status_code=status.HTTP_204_NO_CONTENT)
async def refresh(
    sandbox_id: str,
    team: TeamDep,
    db: DatabaseDep,
    body: wire.RefreshRequest | None = None,
) -> None:
    duration = (
        body.duration if body is not None else wire.RefreshRequest.model_validate({}).duration
    )
    await lifecycle.refresh(db, team.team_id, sandbox_id, duration, actor=team.principal.actor)


@router.post("/sandboxes/{sandbox_id}/pause", status_code=status.HTTP_204_NO_CONTENT)
async def pause(sandbox_id: str, team: TeamDep, db: DatabaseDep, hosts: HostsDep) -> None:
    await lifecycle.pause(db, hosts, team.team_id, sandbox_id, actor=team.principal.actor)


@router.post(
    "/sandboxes/{sandbox_id}/resume",
    status_code=status.HTTP_201_CREATED,
    response_model_exclude_none=True,
)
async def resume(
    sandbox_id: str,
    team: TeamDep,
    db: DatabaseDep,
    hosts: HostsDep,
    site: SiteDep,
    body: wire.ResumeRequest | None = None,
) -> wire.Sandbox:
    body = body or wire.ResumeRequest.model_validate({})
    made = await lifecycle.connect(
        db,
        hosts,
        site,
        team.team_id,
        sandbox_id,
        body.timeout,
        actor=team.principal.actor,
        resume_only=True,
        auto_pause=body.auto_pause,
    )
    return _sandbox(made)


@router.post("/sandboxes/{sandbox_id}/connect", response_model_exclude_none=True)
@router.post("/v2/sandboxes/{sandbox_id}/connect", response_model_exclude_none=True)
async def connect(
    sandbox_id: str,
    team: TeamDep,
    db: DatabaseDep,
    hosts: HostsDep,
    site: SiteDep,
    response: Response,
    body: wire.ConnectRequest | None = None,
) -> wire.Sandbox:
    body = body or wire.ConnectRequest.model_validate({})
    made = await lifecycle.connect(
        db, hosts, site, team.team_id, sandbox_id, body.timeout, actor=team.principal.actor
    )
    # E2B's answer: 201 when the call resumed it, 200 when it was running.
    response.status_code = status.HTTP_201_CREATED if made.resumed else status.HTTP_200_OK
    return _sandbox(made)


@router.get("/sandboxes/{sandbox_id}/metrics")
async def sandbox_metrics(
    sandbox_id: str,
    team: TeamDep,
    db: DatabaseDep,
    hosts: HostsDep,
    start: Annotated[int | None, Query(ge=0)] = None,
    end: Annotated[int | None, Query(ge=0)] = None,
) -> list[wire.SandboxMetric]:
    found = await e2b_snapshots.sandbox_metrics(
        db,
        hosts,
        team.team_id,
        sandbox_id,
        dt.datetime.fromtimestamp(start, dt.UTC) if start is not None else None,
        dt.datetime.fromtimestamp(end, dt.UTC) if end is not None else None,
    )
    return [_metric(m) for m in found]
