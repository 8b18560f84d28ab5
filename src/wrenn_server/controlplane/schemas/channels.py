"""Notification channel wire models (the contract's ChannelResponse and requests), with the
delivery state added: `last_status`, `last_status_code`, `last_error`, `last_attempt_at`."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from .. import ids
from ..db.models import NotificationChannel

Provider = Literal["discord", "slack", "teams", "googlechat", "telegram", "matrix", "webhook"]
Config = dict[str, str]


class CreateChannelRequest(BaseModel):
    name: str
    provider: Provider
    config: Config
    events: list[str] = Field(
        description="capsule.created, capsule.running, capsule.paused, capsule.destroyed, "
        "template.snapshot.created, template.snapshot.deleted, host.up, host.down"
    )


class UpdateChannelRequest(BaseModel):
    name: str
    events: list[str]


class TestChannelRequest(BaseModel):
    provider: Provider
    config: Config


class RotateConfigRequest(BaseModel):
    config: Config


class TestChannelResponse(BaseModel):
    status: str


class ChannelResponse(BaseModel):
    id: str
    team_id: str
    name: str
    provider: str
    events: list[str]
    url: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    secret: str | None = Field(
        None, description="Webhook secret. Only returned on creation and rotation, never again."
    )
    last_status: str | None = Field(None, description="success or failed: the last delivery")
    last_status_code: int | None = None
    last_error: str | None = None
    last_attempt_at: dt.datetime | None = None

    @classmethod
    def of(cls, channel: NotificationChannel, *, with_secret: bool = False) -> ChannelResponse:
        return cls(
            id=ids.CHANNEL.format(channel.id),
            team_id=ids.TEAM.format(channel.team_id),
            name=channel.name,
            provider=channel.provider,
            events=list(channel.events),
            url=channel.config.get("url"),
            created_at=channel.created_at,
            updated_at=channel.updated_at,
            secret=channel.secret if with_secret else None,
            last_status=channel.last_status,
            last_status_code=channel.last_status_code,
            last_error=channel.last_error,
            last_attempt_at=channel.last_attempt_at,
        )
