"""Schemas of the account administration routes: adding users, (de)activating them, and
invitations (`/v1/admin/users`, `/v1/admin/invitations`)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field, StrictBool

from .. import ids
from ..db.models import Invitation
from .admin import AdminAccount
from .auth import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, DisplayName, Email


class CreateUserRequest(BaseModel):
    email: Email
    name: DisplayName
    password: str | None = Field(
        default=None,
        min_length=PASSWORD_MIN_LENGTH,
        max_length=PASSWORD_MAX_LENGTH,
        description="The user's first password; omitted: a random one is generated and returned "
        "once.",
    )
    is_admin: StrictBool = Field(default=False, description="Make the user a platform admin.")


class CreatedUser(AdminAccount):
    password: str | None = Field(
        description="The generated password (shown once), or null when the request set one."
    )


class SetActiveRequest(BaseModel):
    # Strict: "no" or 0 is a malformed request, not a falsy one.
    active: StrictBool = Field(
        description="false: deactivate (sign-ins, JWTs and API keys stop "
        "working); true: reactivate."
    )


class InvitationRequest(BaseModel):
    email: Email


class InvitationOut(BaseModel):
    id: str
    email: str
    created_at: dt.datetime
    expires_at: dt.datetime

    @classmethod
    def of(cls, invitation: Invitation) -> InvitationOut:
        return cls(
            id=ids.INVITATION.format(invitation.id),
            email=invitation.email,
            created_at=invitation.created_at,
            expires_at=invitation.expires_at,
        )


class CreatedInvitation(InvitationOut):
    token: str = Field(description="The invitation's token (shown once): signup takes it.")
    url: str = Field(
        description="The signup link to hand over: the dashboard's signup page with the token "
        "in its fragment."
    )
    mailed: bool = Field(description="Whether the link was also mailed to the address.")
