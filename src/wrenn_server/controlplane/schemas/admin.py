"""Schemas of `/v1/admin` (platform admins). The public contract does not define these routes;
fields follow the ones of the team-scoped schemas they extend."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field, StrictBool

from .. import ids
from ..db.models import Sandbox, Template, User
from .capsules import Capsule, TemplateOut
from .quotas import TeamQuotasResponse
from .teams import TeamResponse


class AdminTeam(TeamResponse):
    member_count: int
    quotas: TeamQuotasResponse
    deleted_at: dt.datetime | None = Field(
        description="When a platform admin deleted the team; deleted teams are listed last."
    )
    owner_name: str = Field(description="The owner's name; empty if the team has none.")
    owner_email: str = Field(description="The owner's email; empty if the team has none.")
    active_sandbox_count: int = Field(description="Capsules running, paused or starting.")
    channel_count: int = Field(description="Notification channels.")


class Page(BaseModel):
    """The paging fields of the Go system's admin lists (`?page`, 1-based)."""

    total: int = Field(description="How many there are in all pages.")
    page: int
    per_page: int
    total_pages: int

    @staticmethod
    def numbers(total: int, page: int, per_page: int) -> dict[str, int]:
        return {
            "total": total,
            "page": page,
            "per_page": per_page,
            "total_pages": (total + per_page - 1) // per_page,
        }


class AdminTeamPage(Page):
    teams: list[AdminTeam]


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


class AdminAccount(BaseModel):
    user_id: str
    id: str = Field(description="The same as user_id (the Go system's name for it).")
    name: str
    email: str
    is_admin: bool
    is_active: bool
    email_verified: bool = Field(
        description="Whether the user proved they receive mail at the address (a mailed link "
        "used, an OAuth provider vouching for it, or an admin adding or inviting them)."
    )
    status: Literal["active", "inactive", "disabled"] = Field(
        description="The Go system's account status: inactive until a signup's emailed link is "
        "used (with email verification), disabled while deactivated by an admin."
    )
    created_at: dt.datetime

    @classmethod
    def of(cls, user: User) -> AdminAccount:
        return cls(
            user_id=ids.USER.format(user.id),
            id=ids.USER.format(user.id),
            status="active" if user.is_active else "disabled",
            name=user.name,
            email=user.email,
            is_admin=user.is_admin,
            is_active=user.is_active,
            email_verified=user.email_verified_at is not None,
            created_at=user.created_at,
        )


class AdminUser(AdminAccount):
    """An account as the admin user list shows it."""

    teams_joined: int = Field(description="Live teams the user is a member of.")
    teams_owned: int = Field(description="Live teams the user owns.")


class AdminUserPage(Page):
    users: list[AdminUser]
