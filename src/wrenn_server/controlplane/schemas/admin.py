"""Schemas of `/v1/admin` (platform admins). The public contract does not define these routes;
fields follow the ones of the team-scoped schemas they extend."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field, StrictBool

from .. import ids
from ..db.models import Sandbox, Template, User
from .capsules import Capsule, TemplateOut
from .quotas import TeamQuotasResponse
from .teams import TeamResponse


class AdminTeam(TeamResponse):
    member_count: int
    quotas: TeamQuotasResponse


class SetBYOCRequest(BaseModel):
    # Strict: "yes" or 1 is a malformed request, not a truthy one.
    enabled: StrictBool = Field(description="Whether the team may register its own (BYOC) hosts.")


class AdminTemplate(TemplateOut):
    team_id: str = Field(description="The owning team; the platform's all-zeros team for base.")
    default_user: str | None = Field(None, description="The user commands run as by default.")
    default_env: dict[str, str] = Field(
        default_factory=dict, description="Environment every capsule from it starts with."
    )

    @classmethod
    def of_admin(cls, t: Template, *, base_template: str) -> AdminTemplate:
        return cls(
            **TemplateOut.of(t, base_template=base_template).model_dump(),
            team_id=ids.TEAM.format(t.team_id),
            default_user=t.default_user,
            default_env=dict(t.default_env or {}),
        )


class AdminCapsule(Capsule):
    team_id: str
    host_id: str | None = None

    @classmethod
    def of_admin(cls, sandbox: Sandbox) -> AdminCapsule:
        return cls(
            **Capsule.of(sandbox).model_dump(),
            team_id=ids.TEAM.format(sandbox.team_id),
            host_id=ids.HOST.format(sandbox.host_id) if sandbox.host_id else None,
        )


class AdminUser(BaseModel):
    user_id: str
    name: str
    email: str
    is_admin: bool
    is_active: bool
    email_verified: bool = Field(
        description="Whether the user proved they receive mail at the address (a mailed link "
        "used, an OAuth provider vouching for it, or an admin adding or inviting them)."
    )
    created_at: dt.datetime

    @classmethod
    def of(cls, user: User) -> AdminUser:
        return cls(
            user_id=ids.USER.format(user.id),
            name=user.name,
            email=user.email,
            is_admin=user.is_admin,
            is_active=user.is_active,
            email_verified=user.email_verified_at is not None,
            created_at=user.created_at,
        )
