"""Every ORM model, imported here so `Base.metadata` holds the whole schema."""

from ..types import Base
from .accounts import (
    ROLES,
    APIKey,
    Invitation,
    LoginThrottle,
    OAuthIdentity,
    Team,
    TeamMember,
    User,
    UserToken,
)
from .audit import AuditLog
from .capsules import (
    Sandbox,
    SandboxMetric,
    SandboxMetricsSnapshot,
    Template,
    TemplateBuild,
    TemplateBuildArchive,
)
from .channels import NotificationChannel
from .e2b import E2bSandbox, E2bSnapshot
from .events import Event
from .hosts import Host, HostRefreshToken, HostTag, HostToken
from .leases import Lease
from .quotas import TeamQuota

__all__ = [
    "ROLES",
    "APIKey",
    "AuditLog",
    "Base",
    "E2bSandbox",
    "E2bSnapshot",
    "Event",
    "Host",
    "HostRefreshToken",
    "HostTag",
    "HostToken",
    "Invitation",
    "Lease",
    "LoginThrottle",
    "NotificationChannel",
    "OAuthIdentity",
    "Sandbox",
    "SandboxMetric",
    "SandboxMetricsSnapshot",
    "Team",
    "TeamMember",
    "TeamQuota",
    "Template",
    "TemplateBuild",
    "TemplateBuildArchive",
    "User",
    "UserToken",
]
