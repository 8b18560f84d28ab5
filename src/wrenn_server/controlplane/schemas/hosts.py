"""Schemas of `/v1/hosts`: hosts as users and admins see them, and the agent's registration,
heartbeat and refresh exchanges."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from ...addresses import UnixAddress
from ...addresses import parse as parse_address
from ...agentproto import tls
from .. import ids
from ..db.models.hosts import Host

_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=-]{0,63}")


class CreateHostRequest(BaseModel):
    type: Literal["regular", "byoc"] = Field(
        description="Regular hosts are shared (platform admins); BYOC hosts belong to a team."
    )
    team_id: str | None = Field(None, description="The owning team (team-...); BYOC only.")
    provider: str | None = Field(None, max_length=64, description="e.g. aws, hetzner.")
    availability_zone: str | None = Field(None, max_length=64, description="e.g. eu-west.")


class HostResponse(BaseModel):
    id: str
    type: str
    team_id: str | None
    team_name: str | None = Field(None, description="The owning team's name (BYOC hosts).")
    provider: str | None
    availability_zone: str | None
    arch: str | None
    cpu_cores: int | None
    memory_mb: int | None
    disk_gb: int | None
    address: str | None
    status: str = Field(description="pending, online, offline, draining or unreachable.")
    last_heartbeat_at: dt.datetime | None
    created_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    tags: list[str] = Field(default_factory=list)
    tls_fingerprint: str | None = Field(
        None,
        description="SHA-256 of the TLS certificate pinned for this host's agent; the agent logs "
        "the same at start. None for an agent reached over a unix socket.",
    )

    @classmethod
    def of(
        cls, host: Host, *, team_name: str | None = None, tags: list[str] | None = None
    ) -> HostResponse:
        return cls(
            id=ids.HOST.format(host.id),
            type=host.type,
            team_id=ids.TEAM.format(host.team_id) if host.team_id else None,
            team_name=team_name,
            provider=host.provider,
            availability_zone=host.availability_zone,
            arch=host.arch,
            cpu_cores=host.cpu_cores,
            memory_mb=host.memory_mb,
            disk_gb=host.disk_gb,
            address=host.address,
            status=host.status,
            last_heartbeat_at=host.last_heartbeat_at,
            created_by=ids.USER.format(host.created_by) if host.created_by else None,
            created_at=host.created_at,
            updated_at=host.updated_at,
            tags=tags or [],
            tls_fingerprint=tls.fingerprint(host.tls_certificate) if host.tls_certificate else None,
        )


class CreateHostResponse(BaseModel):
    host: HostResponse
    registration_token: str = Field(
        description="One-time registration token for the host agent; valid for an hour."
    )


class RegisterHostRequest(BaseModel):
    token: str = Field(max_length=200, description="The registration token from POST /v1/hosts.")
    address: str = Field(
        max_length=255,
        description="Where the control plane reaches the agent: host:port, [ipv6]:port or "
        "unix:/path (shared hosts only). Stored in a canonical form. A BYOC host's address must "
        "resolve to addresses that are not loopback, link-local, unspecified, multicast, "
        "reserved or a cloud metadata service (in any notation, IPv4-mapped included).",
    )
    arch: str | None = Field(None, max_length=32)
    cpu_cores: int | None = Field(None, ge=1, le=100_000)
    memory_mb: int | None = Field(None, ge=1, le=1 << 40)
    disk_gb: int | None = Field(None, ge=0, le=1 << 30)
    tls_certificate: str | None = Field(
        None,
        max_length=16_384,
        description="PEM certificate of the agent's TLS server; the control plane trusts only "
        "it for this host. Required unless the address is a unix socket.",
    )

    @field_validator("tls_certificate")
    @classmethod
    def _valid_certificate(cls, value: str | None) -> str | None:
        if value is not None and not tls.is_certificate(value):
            raise ValueError("must be one PEM certificate")
        return value

    @model_validator(mode="after")
    def _tls_over_network(self) -> RegisterHostRequest:
        if self.tls_certificate is None and not isinstance(
            parse_address(self.address), UnixAddress
        ):
            raise ValueError("an agent reached over the network must send its tls_certificate")
        return self

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        parse_address(value)  # AddressError (a ValueError) says what is wrong
        return value


class HostCredentials(BaseModel):
    """What a host agent keeps after registering or refreshing."""

    host: HostResponse
    token: str = Field(description="Host JWT for the X-Host-Token header; valid for 7 days.")
    refresh_token: str = Field(
        description="Exchanges for a new JWT at /v1/hosts/auth/refresh; valid for 60 days, "
        "rotated on each use."
    )
    agent_secret: str = Field(
        description="The secret the control plane presents on every call to this host's agent."
    )


class RefreshHostTokenRequest(BaseModel):
    refresh_token: str = Field(max_length=200)


class HostDeletePreview(BaseModel):
    host: HostResponse
    sandbox_ids: list[str] = Field(description="Capsules a forced delete would destroy.")


class AddTagRequest(BaseModel):
    tag: str

    @field_validator("tag")
    @classmethod
    def _valid_tag(cls, value: str) -> str:
        if not _TAG_RE.fullmatch(value):
            raise ValueError("1-64 characters: letters, digits and . _ : = -")
        return value


def valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.fullmatch(tag))
