"""Schemas of `/v1/teams` and `/v1/auth/switch-team`."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from ..services.parking import MAX_IDLE_SEC
from ..services.teams import TEAM_NAME_MAX
from .auth import Email

# Letters and digits (any script, so "José's Team" renames cleanly), space, underscore, and the
# hyphen, '@' and apostrophe the seeds allow on top of the contract's `A-Z a-z 0-9 space _`.
_TEAM_NAME_RE = re.compile(r"[\w '@-]+")


def _team_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > TEAM_NAME_MAX:
        raise ValueError(f"must be at most {TEAM_NAME_MAX} characters")
    if not _TEAM_NAME_RE.fullmatch(value):
        raise ValueError("may contain only letters, digits, spaces and _ - @ '")
    return value


TeamName = Annotated[str, AfterValidator(_team_name)]


class TeamNameRequest(BaseModel):
    """Body of create and rename."""

    name: TeamName


class TeamResponse(BaseModel):
    id: str
    name: str
    slug: str = Field(description="Immutable 12-char hex slug (e.g. a1b2c3-d1e2f3).")
    is_byoc: bool
    created_at: dt.datetime


class TeamWithRoleResponse(TeamResponse):
    role: Literal["owner", "admin", "member"]


class TeamMemberResponse(BaseModel):
    user_id: str
    name: str
    email: str
    role: Literal["owner", "admin", "member"]
    joined_at: dt.datetime


class TeamDetailResponse(BaseModel):
    team: TeamResponse
    members: list[TeamMemberResponse]


class AddMemberRequest(BaseModel):
    email: Email


class UpdateRoleRequest(BaseModel):
    # "owner" is not assignable: there is exactly one owner, the team's creator.
    role: Literal["admin", "member"]


class SwitchTeamRequest(BaseModel):
    team_id: str = Field(max_length=64)


class TeamParking(BaseModel):
    """The team's parking policy, for capsules created without a timeout or auto_resume of
    their own (a value sent at create, `timeout_sec: 0` included, is kept); applies to capsules
    created after it is set."""

    idle_sec: int = Field(
        ge=0,
        le=MAX_IDLE_SEC,
        description="Seconds without activity (no exec, file call, ping or stream) after which "
        "such a capsule is paused, becoming its `timeout_sec`; 0 never pauses it.",
    )
    auto_resume: bool = Field(
        description="Such a capsule, once paused, is resumed by the next request that reaches "
        "into it (REST exec, files, processes, the port proxy, E2B envd calls), becoming its "
        "`auto_resume`."
    )
