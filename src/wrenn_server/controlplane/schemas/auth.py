"""Schemas of signup, login and the current user (`/v1/auth/*`, `/v1/me`)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

# Deliberately simple: one '@', something before it, a dotted domain after it, no spaces. The
# real check of an address is whether mail arrives; this only rejects obvious typos.
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PASSWORD_MIN_LENGTH = 8
# argon2 takes any length; the cap keeps a request from making the server hash megabytes.
PASSWORD_MAX_LENGTH = 1024


def normalize_email(value: str) -> str:
    return value.strip().lower()


def _valid_email(value: str) -> str:
    value = normalize_email(value)
    if len(value) > 320 or not _EMAIL_RE.fullmatch(value):
        raise ValueError("not a valid email address")
    return value


def _display_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


Email = Annotated[str, AfterValidator(_valid_email)]
DisplayName = Annotated[str, Field(max_length=100), AfterValidator(_display_name)]


class SignupRequest(BaseModel):
    email: Email
    password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
    name: DisplayName


class LoginRequest(BaseModel):
    # Not format-checked: a malformed address simply matches no account (401, as the contract
    # has no 400 for login).
    email: str = Field(max_length=320)
    password: str = Field(max_length=PASSWORD_MAX_LENGTH)


class AuthResponse(BaseModel):
    token: str = Field(description="JWT for the Authorization: Bearer header.")
    user_id: str
    team_id: str = Field(description="The team the token acts in ('' when the user has none).")
    email: str
    name: str


class SignupResponse(AuthResponse):
    """The contract's signup answer (`message`) plus a session.

    This deployment has no mail server, so accounts are active at once: the response also
    carries what `/v1/auth/activate` would return, and the client may skip the login step.
    """

    message: str


class MeResponse(BaseModel):
    user_id: str
    name: str
    email: str
    has_password: bool
    providers: list[str]
    team_id: str
    role: str | None = Field(description="Role in the current team, from the database.")
    is_admin: bool


class ConnectProviderResponse(BaseModel):
    auth_url: str = Field(description="The provider's authorization URL to navigate to.")


class OAuthProvidersResponse(BaseModel):
    providers: list[str] = Field(
        description='The OAuth providers this installation is configured for, e.g. ["github"].'
    )
