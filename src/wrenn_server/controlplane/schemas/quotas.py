"""Schemas of team quotas: `GET /v1/teams/{id}/quotas` (members) and
`GET/PUT /v1/admin/teams/{id}/quotas` (platform admins). Not in the public contract."""

from __future__ import annotations

from dataclasses import asdict

from pydantic import BaseModel, ConfigDict, Field

from ..services import quotas

_COUNT = 1_000_000
_MB = 1 << 30


class QuotaLimits(BaseModel):
    max_capsules: int = Field(description="Capsules that are not stopped (paused ones count).")
    max_vcpus: int = Field(description="vCPUs of pending, starting and running capsules.")
    max_memory_mb: int = Field(description="Memory of pending, starting and running capsules.")
    max_disk_mb: int = Field(description="Disk of one capsule.")


class QuotaOverrides(BaseModel):
    """A team's own limits; null keeps the platform default. As a PUT body it replaces them
    all: a field left out goes back to the default."""

    model_config = ConfigDict(extra="forbid")

    max_capsules: int | None = Field(None, ge=0, le=_COUNT)
    max_vcpus: int | None = Field(None, ge=0, le=_COUNT)
    max_memory_mb: int | None = Field(None, ge=0, le=_MB)
    max_disk_mb: int | None = Field(None, ge=0, le=_MB)

    def domain(self) -> quotas.Overrides:
        return quotas.Overrides(**self.model_dump())


class QuotaUsage(BaseModel):
    capsules: int
    vcpus: int
    memory_mb: int


class TeamQuotasResponse(BaseModel):
    limits: QuotaLimits = Field(description="What the team may hold: its own or the default.")
    overrides: QuotaOverrides = Field(description="The team's own limits (null: the default).")
    defaults: QuotaLimits = Field(description="The platform defaults.")
    usage: QuotaUsage = Field(description="What the team's capsules hold now.")

    @classmethod
    def of(cls, view: quotas.TeamQuotas, defaults: quotas.Limits) -> TeamQuotasResponse:
        return cls(
            limits=QuotaLimits(**asdict(view.limits)),
            overrides=QuotaOverrides(**asdict(view.overrides)),
            defaults=QuotaLimits(**asdict(defaults)),
            usage=QuotaUsage(
                capsules=view.usage.capsules,
                vcpus=view.usage.vcpus,
                memory_mb=view.usage.memory_mb,
            ),
        )
