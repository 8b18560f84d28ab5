"""Schemas of `/v1/users`."""

from __future__ import annotations

from pydantic import BaseModel


class UserSearchResult(BaseModel):
    user_id: str
    email: str
