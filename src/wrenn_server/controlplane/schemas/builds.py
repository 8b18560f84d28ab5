"""Schemas of `/v1/admin/builds` (platform admins). The public contract does not define these
routes; fields follow the seeds' template builds."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field, field_validator

from .. import ids
from ..db.models.capsules import TemplateBuild

TEMPLATE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class CreateBuildRequest(BaseModel):
    name: str = Field(pattern=TEMPLATE_NAME_PATTERN, description="The template to produce.")
    recipe: list[str] = Field(
        max_length=1000,
        description="Steps, one per line: RUN, ENV, COPY, USER, WORKDIR (a string is split into "
        "lines).",
    )
    base_template: str | None = Field(
        None, pattern=TEMPLATE_NAME_PATTERN, description="Default: the platform's base template."
    )
    start_cmd: str | None = Field(None, max_length=4096, description="Started after the steps.")
    healthcheck: str | None = Field(
        None,
        max_length=4096,
        description="Run until it succeeds (60 s at most); if set, the template is a full "
        "snapshot with the started service running, otherwise an image.",
    )
    vcpus: int = Field(1, ge=1, le=16)
    memory_mb: int = Field(1024, ge=128, le=65536)
    skip_pre_post: bool = Field(False, description="Skip apt-get update before, clean after.")

    @field_validator("recipe", mode="before")
    @classmethod
    def _lines(cls, value: Any) -> Any:
        return value.splitlines() if isinstance(value, str) else value

    @field_validator("start_cmd", "healthcheck")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class BuildResponse(BaseModel):
    id: str
    name: str
    base_template: str
    recipe: list[str]
    start_cmd: str | None
    healthcheck: str | None
    vcpus: int
    memory_mb: int
    skip_pre_post: bool
    has_archive: bool
    status: str = Field(description="pending, running, success, failed or cancelled.")
    current_step: int
    total_steps: int
    logs: list[dict[str, Any]] = Field(description="One entry per finished step.")
    error: str | None
    result_type: str | None = Field(description="snapshot or image, once it succeeded.")
    default_user: str | None
    default_env: dict[str, str]
    sandbox_id: str | None
    created_by: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    completed_at: dt.datetime | None

    @classmethod
    def of(cls, build: TemplateBuild, *, logs: bool = True) -> BuildResponse:
        return cls(
            id=ids.BUILD.format(build.id),
            name=build.name,
            base_template=build.base_template,
            recipe=list(build.recipe),
            start_cmd=build.start_cmd,
            healthcheck=build.healthcheck,
            vcpus=build.vcpus,
            memory_mb=build.memory_mb,
            skip_pre_post=build.skip_pre_post,
            has_archive=build.archive_sha256 is not None,
            status=build.status,
            current_step=build.current_step,
            total_steps=build.total_steps,
            logs=list(build.logs) if logs else [],
            error=build.error,
            result_type=build.result_type,
            default_user=build.default_user,
            default_env=dict(build.default_env or {}),
            sandbox_id=ids.SANDBOX.format(build.sandbox_id) if build.sandbox_id else None,
            created_by=ids.USER.format(build.created_by) if build.created_by else None,
            created_at=build.created_at,
            started_at=build.started_at,
            completed_at=build.completed_at,
        )
