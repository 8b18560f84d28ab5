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


Password = Annotated[str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)]
# A one-time token from a mailed link (43 URL-safe characters); the cap only bounds the input.
OneTimeToken = Annotated[str, Field(min_length=1, max_length=200)]


class SignupRequest(BaseModel):
    email: Email
    password: Password
    name: DisplayName
    invitation: OneTimeToken | None = Field(
        default=None,
        description="An invitation's token: required when signup is by invitation (it must "
        "have been made for this email); with open signup it marks the email verified.",
    )


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

    Without email verification the account is active at once: the response also carries what
    `/v1/auth/activate` would return, and the client may skip the login step. With it
    (`activation_required`), `token` and `team_id` are empty until the mailed link is used.
    """

    message: str
    activation_required: bool = Field(
        default=False,
        description="The account waits for its email to be confirmed through the mailed link "
        "(POST /v1/auth/activate); no session yet.",
    )


class ActivateRequest(BaseModel):
    token: OneTimeToken


class ResendActivationRequest(BaseModel):
    # Not format-checked: a malformed address simply awaits no activation (same answer).
    email: str = Field(max_length=320)


class UpdateMeRequest(BaseModel):
    name: DisplayName


class DeleteAccountRequest(BaseModel):
    confirmation: str = Field(
        max_length=320, description="The account's email address, to confirm the deletion."
    )


class MeResponse(BaseModel):
    user_id: str
    name: str
    email: str
    has_password: bool
    providers: list[str]
    team_id: str
    role: str | None = Field(description="Role in the current team, from the database.")
    is_admin: bool


class ChangePasswordRequest(BaseModel):
    current_password: str | None = Field(
        default=None,
        max_length=PASSWORD_MAX_LENGTH,
        description="Required when the account has a password.",
    )
    new_password: Password
    confirm_password: str | None = Field(
        default=None,
        max_length=PASSWORD_MAX_LENGTH,
        description="Required when an OAuth-only account adds a password (must match "
        "new_password).",
    )


class PasswordResetRequest(BaseModel):
    # Not format-checked: a malformed address simply has no account (and the answer is the same).
    email: str = Field(max_length=320)


class PasswordResetConfirm(BaseModel):
    token: OneTimeToken
    new_password: Password


class AuthOptionsResponse(BaseModel):
    signup: str = Field(description="Who may sign up: 'open', 'invite' or 'closed'.")
    password_reset: bool = Field(
        description="Whether password reset by mail is available (an SMTP server is configured)."
    )
    email_verification: bool = Field(
        default=False,
        description="Whether an open signup must confirm its email through a mailed link.",
    )


class ConnectProviderResponse(BaseModel):
    auth_url: str = Field(description="The provider's authorization URL to navigate to.")


class OAuthProvidersResponse(BaseModel):
    providers: list[str] = Field(
        description='The OAuth providers this installation is configured for, e.g. ["github"].'
    )
