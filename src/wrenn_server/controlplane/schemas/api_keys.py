"""Schemas of `/v1/api-keys`."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field, field_validator

DEFAULT_KEY_NAME = "Unnamed API Key"


class CreateAPIKeyRequest(BaseModel):
    name: str = Field(DEFAULT_KEY_NAME, max_length=200)

    @field_validator("name")
    @classmethod
    def _default_when_blank(cls, value: str) -> str:
        return value.strip() or DEFAULT_KEY_NAME


class APIKeyResponse(BaseModel):
    id: str
    team_id: str
    name: str
    key_prefix: str = Field(description='Display prefix (e.g. "wrn_ab12cd34").')
    created_at: dt.datetime
    last_used: dt.datetime | None
    key: str | None = Field(
        None, description="Full plaintext key. Only returned on creation, never again."
    )
