"""Capsules (sandboxes), templates, template builds and capsule metrics."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..types import (
    Base,
    JSONType,
    UTCDateTime,
    enum_check,
    json_default_dict,
    json_default_list,
    utcnow,
)

SANDBOX_STATUSES = (
    "pending",
    "starting",
    "running",
    "paused",
    "hibernated",
    "stopped",
    "missing",
    "error",
)
TEMPLATE_TYPES = ("base", "snapshot")
BUILD_STATUSES = ("pending", "running", "success", "failed", "cancelled")
METRIC_TIERS = ("10m", "2h", "24h")


def _storage_default(context: Any) -> str:
    """A row inserted without a storage name keeps its name as one (the platform's
    templates; services/templates.py gives a team's its own)."""
    name: str = context.get_current_parameters()["name"]
    return name


class Sandbox(Base):
    """A capsule as the control plane knows it; the host agent owns the running thing."""

    __tablename__ = "sandboxes"
    __table_args__ = (
        CheckConstraint(enum_check("status", SANDBOX_STATUSES), name="status"),
        Index(None, "team_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    # Null while pending (not placed yet) or after its host was deleted.
    host_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="SET NULL"), index=True
    )
    # The template's name as its team knows it (what the API shows) ...
    template: Mapped[str] = mapped_column(Text)
    # ... and the row it was, for what a resume or a snapshot takes from it (its default user
    # and environment). No foreign key: a template deleted later leaves capsules from it as
    # they are, and a SQLite table with children cannot be rebuilt without touching them.
    template_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    # Why it is in its status, where the platform changed it on its own ("out of memory" for a
    # capsule in `error` whose sandbox its memory limit killed); None otherwise.
    status_reason: Mapped[str | None] = mapped_column(Text)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_size_mb: Mapped[int] = mapped_column(Integer, server_default=text("5120"), default=5120)
    # 0 = never auto-pause.
    timeout_sec: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    # Ports the port proxy serves to anyone, without credentials (sorted, no duplicates).
    public_ports: Mapped[list[int]] = mapped_column(
        JSONType, default=json_default_list, server_default=text("'[]'")
    )
    # A proxied request to the capsule while it is paused resumes it (else it is refused).
    auto_resume: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    # The wire's `metadata` (`metadata` itself is SQLAlchemy's): the creator's labels and the
    # versions its host reports (services/capsule_metadata.py).
    meta: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONType, default=json_default_dict, server_default=text("'{}'")
    )
    guest_ip: Mapped[str | None] = mapped_column(String(45))
    host_ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_active_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_updated: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class Template(Base):
    """A template capsules start from. Names are unique per team: platform templates (team
    `ids.PLATFORM_TEAM_ID`, visible to every team) form a namespace of their own, and two
    teams may both have a template `x` (services/templates.py says which one a name means).

    The host agent keys its files by `storage_name`, unique across the platform: a platform
    template's is its name; a team's is its name with the row's id appended (one from before
    names were per team kept its name, under which its files were stored).
    """

    __tablename__ = "templates"
    __table_args__ = (
        CheckConstraint(enum_check("type", TEMPLATE_TYPES), name="type"),
        UniqueConstraint("team_id", "name"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), index=True
    )
    storage_name: Mapped[str] = mapped_column(Text, unique=True, default=_storage_default)
    type: Mapped[str] = mapped_column(String(16))
    # The host holding the files of a snapshot or built image, where capsules from it must run
    # (deleting the host deletes the row: the files went with it). NULL for base templates,
    # which every host has.
    host_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), index=True
    )
    vcpus: Mapped[int | None] = mapped_column(Integer)
    memory_mb: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    default_user: Mapped[str | None] = mapped_column(String(64))
    default_env: Mapped[dict[str, str]] = mapped_column(JSONType, default=json_default_dict)
    # The wire's `metadata`: a snapshot's are its capsule's at the time (as the Go system's).
    meta: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONType, default=json_default_dict, server_default=text("'{}'")
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )


class TemplateBuild(Base):
    """An admin's template build: the recipe, its progress and per-step logs."""

    __tablename__ = "template_builds"
    __table_args__ = (
        CheckConstraint(enum_check("status", BUILD_STATUSES), name="status"),
        Index(None, "status", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # The template this build produces.
    name: Mapped[str] = mapped_column(Text)
    base_template: Mapped[str] = mapped_column(Text)
    # Steps as strings: RUN / ENV / COPY / USER / WORKDIR.
    recipe: Mapped[list[str]] = mapped_column(JSONType, default=json_default_list)
    start_cmd: Mapped[str | None] = mapped_column(Text)
    healthcheck: Mapped[str | None] = mapped_column(Text)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    skip_pre_post: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    # SHA-256 of the uploaded COPY archive, if any; its bytes are in template_build_archives
    # (in the database, so a worker of any control plane process can run the build).
    archive_sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    current_step: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    total_steps: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    # One object per step: {"step", "cmd", "stdout", "stderr", "exit_code", "ok", ...}.
    logs: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=json_default_list)
    error: Mapped[str | None] = mapped_column(Text)
    default_user: Mapped[str | None] = mapped_column(String(64))
    default_env: Mapped[dict[str, str]] = mapped_column(JSONType, default=json_default_dict)
    # What the build produced: a full snapshot (healthcheck passed) or an image only.
    result_type: Mapped[str | None] = mapped_column(String(16))
    sandbox_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sandboxes.id", ondelete="SET NULL")
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Renewed every second by the worker running it; a running build whose worker went quiet
    # (its control plane died) is failed by the others.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class TemplateBuildArchive(Base):
    """One piece of a build's uploaded archive, in order; gone when the build ends."""

    __tablename__ = "template_build_archives"

    build_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("template_builds.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class SandboxMetric(Base):
    """One flushed sample of a capsule's tiered ring buffers (written on pause and destroy)."""

    __tablename__ = "sandbox_metrics"
    __table_args__ = (
        CheckConstraint(enum_check("tier", METRIC_TIERS), name="tier"),
        Index(None, "sandbox_id", "tier", "ts"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    sandbox_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sandboxes.id", ondelete="CASCADE"))
    tier: Mapped[str] = mapped_column(String(8))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    cpu_pct: Mapped[float] = mapped_column(Float)
    mem_bytes: Mapped[int] = mapped_column(BigInteger)
    disk_bytes: Mapped[int] = mapped_column(BigInteger)


class SandboxMetricsSnapshot(Base):
    """Platform stats per team, sampled every 10 s (60-day retention)."""

    __tablename__ = "sandbox_metrics_snapshots"
    __table_args__ = (Index(None, "team_id", "sampled_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    sampled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    running_count: Mapped[int] = mapped_column(Integer)
    paused_count: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    # Running + starting capsules only (paused ones hold no CPU).
    vcpus_reserved: Mapped[int] = mapped_column(Integer)
    memory_mb_reserved: Mapped[int] = mapped_column(Integer)
