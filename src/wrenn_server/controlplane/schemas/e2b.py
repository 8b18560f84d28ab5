"""Wire schemas of the E2B control API (E2B's field names: camelCase, `templateID`, ...).

Only what the stock `e2b` SDK sends and reads; unknown fields in a request are ignored, as E2B's
API does, except those that ask for something Wrenn cannot give (checked by the service)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

E2bState = Literal["running", "paused"]


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class AutoResume(_Wire):
    enabled: bool = False


class NewSandbox(_Wire):
    template_id: str = Field(alias="templateID", min_length=1, max_length=128)
    # E2B's bounds: its API refuses more than a day (the Pro tier's); 0 is refused too.
    timeout: int = Field(300, ge=1, le=24 * 3600)
    auto_pause: bool = Field(False, alias="autoPause")
    auto_resume: AutoResume | None = Field(None, alias="autoResume")
    secure: bool | None = None
    allow_internet_access: bool | None = None
    metadata: dict[str, str] | None = None
    env_vars: dict[str, str] | None = Field(None, alias="envVars")
    # Asked for, but not offered by Wrenn: the service refuses them rather than ignore them.
    mcp: dict[str, Any] | None = None
    network: dict[str, Any] | None = None
    volume_mounts: list[Any] | None = Field(None, alias="volumeMounts")
    iam: dict[str, Any] | None = None


class TimeoutRequest(_Wire):
    timeout: int = Field(ge=0, le=24 * 3600)


class RefreshRequest(_Wire):
    duration: int = Field(60, ge=0, le=3600)


class ConnectRequest(_Wire):
    timeout: int = Field(300, ge=1, le=24 * 3600)


class ResumeRequest(_Wire):
    timeout: int = Field(300, ge=1, le=24 * 3600)
    auto_pause: bool | None = Field(None, alias="autoPause")


class SnapshotRequest(_Wire):
    name: str | None = Field(None, min_length=1, max_length=128)


class Sandbox(_Wire):
    """A created or connected sandbox, with what the SDK needs to reach it."""

    sandbox_id: str = Field(serialization_alias="sandboxID")
    template_id: str = Field(serialization_alias="templateID")
    client_id: str = Field(serialization_alias="clientID")
    envd_version: str = Field(serialization_alias="envdVersion")
    envd_access_token: str = Field(serialization_alias="envdAccessToken")
    traffic_access_token: str | None = Field(None, serialization_alias="trafficAccessToken")
    domain: str | None = None
    alias: str | None = None


class Lifecycle(_Wire):
    on_timeout: Literal["pause", "kill"] = Field(serialization_alias="onTimeout")
    auto_resume: bool = Field(serialization_alias="autoResume")


class ListedSandbox(_Wire):
    sandbox_id: str = Field(serialization_alias="sandboxID")
    template_id: str = Field(serialization_alias="templateID")
    alias: str | None = None
    client_id: str = Field(serialization_alias="clientID")
    started_at: dt.datetime = Field(serialization_alias="startedAt")
    end_at: dt.datetime = Field(serialization_alias="endAt")
    cpu_count: int = Field(serialization_alias="cpuCount")
    memory_mb: int = Field(serialization_alias="memoryMB")
    disk_size_mb: int = Field(serialization_alias="diskSizeMB")
    state: E2bState
    envd_version: str = Field(serialization_alias="envdVersion")
    metadata: dict[str, str] = Field(default_factory=dict)


class SandboxDetail(ListedSandbox):
    envd_access_token: str = Field(serialization_alias="envdAccessToken")
    domain: str | None = None
    allow_internet_access: bool = Field(True, serialization_alias="allowInternetAccess")
    lifecycle: Lifecycle


class SandboxMetric(_Wire):
    timestamp: dt.datetime
    timestamp_unix: int = Field(serialization_alias="timestampUnix")
    cpu_count: int = Field(serialization_alias="cpuCount")
    cpu_used_pct: float = Field(serialization_alias="cpuUsedPct")
    mem_used: int = Field(serialization_alias="memUsed")
    mem_total: int = Field(serialization_alias="memTotal")
    mem_cache: int = Field(0, serialization_alias="memCache")
    disk_used: int = Field(serialization_alias="diskUsed")
    disk_total: int = Field(serialization_alias="diskTotal")


class SandboxesWithMetrics(_Wire):
    sandboxes: dict[str, SandboxMetric]


class SnapshotInfo(_Wire):
    snapshot_id: str = Field(serialization_alias="snapshotID")
    names: list[str]
