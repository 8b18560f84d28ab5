"""Wire schemas of capsules, processes, files and snapshot templates (field names as in the
public contract)."""

from __future__ import annotations

import base64
import codecs
import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..db.models.capsules import Sandbox, Template
from ..services.parking import MAX_IDLE_SEC

MAX_PUBLIC_PORTS = 32


def _sorted_unique(ports: list[int]) -> list[int]:
    return sorted(set(ports))


PublicPorts = Annotated[
    list[Annotated[int, Field(ge=1, le=65535)]],
    Field(
        max_length=MAX_PUBLIC_PORTS,
        description="Ports of the capsule the port proxy serves to anyone, without credentials "
        f"(for demos; at most {MAX_PUBLIC_PORTS}, duplicates dropped). Other ports need an API "
        "key of the team, a member's JWT or a preview token.",
    ),
    AfterValidator(_sorted_unique),
]
AutoResume = Annotated[
    bool,
    Field(
        description="A request through the port proxy to the capsule while it is paused "
        "resumes it (and waits for it); otherwise such a request gets 409."
    ),
]


class CreateCapsuleRequest(BaseModel):
    # Bounds of any capsule on any host; the team's quotas and the hosts' room narrow them.
    template: str = Field("minimal", min_length=1, max_length=128)
    vcpus: int = Field(1, ge=1, le=64)
    memory_mb: int = Field(512, ge=64, le=262144)
    timeout_sec: int = Field(
        0,
        ge=0,
        le=MAX_IDLE_SEC,
        description="Seconds without activity after which the capsule is paused; 0 never "
        "pauses it. Left out, the team's parking policy (`idle_sec`) decides.",
    )
    disk_size_mb: int = Field(
        5120,
        ge=64,
        le=262144,
        description="Size of the capsule's writable disk, MiB (a sparse image on its host).",
    )
    public_ports: PublicPorts = Field(default_factory=list)
    auto_resume: bool = Field(
        False,
        description="A request into the capsule while it is paused (the port proxy, REST exec, "
        "files, processes, E2B envd calls) resumes it and waits for it; otherwise such a "
        "request gets 409. Left out, the team's parking policy (`auto_resume`) decides.",
    )
    metadata: dict[str, str] | None = Field(
        None,
        description="Your labels for the capsule, set at create time only: at most 20 keys; "
        "keys match `[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}`; values are at most 64 printable "
        "characters. The platform's keys (kernel_version, vmm_version, agent_version, "
        "envd_version) are refused.",
    )


class UpdateCapsuleRequest(BaseModel):
    """What may change on a capsule; fields left out stay as they are."""

    public_ports: PublicPorts | None = None
    auto_resume: AutoResume | None = None


PREVIEW_TTL_SEC = 3600


class PortURLRequest(BaseModel):
    ttl_seconds: int = Field(
        PREVIEW_TTL_SEC,
        ge=60,
        le=24 * 3600,
        description="How long the link (and the cookie it leaves in the browser) opens the "
        "port, seconds.",
    )


class PortURL(BaseModel):
    url: str = Field(
        description="Opens the port in a browser: the port proxy turns its `wrenn_preview` "
        "parameter into a cookie for that host only and redirects to the same URL without it."
    )
    port: int
    expires_at: dt.datetime


class Capsule(BaseModel):
    id: str
    status: str
    status_reason: str | None = Field(
        None,
        description="Why the platform put the capsule in its status on its own: for `error`, "
        'why its sandbox died ("out of memory" when its memory limit killed it, "sandbox '
        'exited" otherwise).',
    )
    template: str
    vcpus: int
    memory_mb: int
    disk_size_mb: int
    timeout_sec: int
    public_ports: list[int] = Field(
        default_factory=list, description="Ports the port proxy serves without credentials."
    )
    auto_resume: bool = Field(
        False, description="A request through the port proxy resumes the capsule when paused."
    )
    guest_ip: str | None = None
    host_ip: str | None = None
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    last_active_at: dt.datetime | None = None
    last_updated: dt.datetime
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="The labels given at create time and, once it has run, the versions that "
        "run it, set by the platform: vmm_version (gVisor's runsc), agent_version (its host "
        "agent), envd_version (the agent inside it).",
    )

    @classmethod
    def of(cls, sandbox: Sandbox) -> Capsule:
        return cls(
            id=ids.SANDBOX.format(sandbox.id),
            status=sandbox.status,
            status_reason=sandbox.status_reason,
            template=sandbox.template,
            vcpus=sandbox.vcpus,
            memory_mb=sandbox.memory_mb,
            disk_size_mb=sandbox.disk_size_mb,
            timeout_sec=sandbox.timeout_sec,
            public_ports=list(sandbox.public_ports or []),
            auto_resume=sandbox.auto_resume,
            guest_ip=sandbox.guest_ip,
            host_ip=sandbox.host_ip,
            created_at=sandbox.created_at,
            started_at=sandbox.started_at,
            last_active_at=sandbox.last_active_at,
            last_updated=sandbox.last_updated,
            metadata=dict(sandbox.meta or {}),
        )


class ExecRequest(BaseModel):
    cmd: str = Field(min_length=1)
    args: list[str] | None = None
    timeout_sec: int = Field(30, ge=1, le=24 * 3600)
    background: bool = False
    tag: str | None = Field(None, max_length=128)
    envs: dict[str, str] | None = None
    cwd: str | None = None
    user: str | None = Field(
        None,
        max_length=32,
        description="The user to run as; by default the template's (wrenn-user in the base "
        "template, which has passwordless sudo). `root` is allowed: the capsule is the caller's.",
    )

    def to_pb(self, wire_id: str) -> pb.ExecRequest:
        return pb.ExecRequest(
            sandbox_id=wire_id,
            argv=[self.cmd, *self.args] if self.args is not None else [],
            cmd=self.cmd,
            env=self.envs or {},
            cwd=self.cwd or "",
            user=self.user or "",
            timeout_sec=0 if self.background else self.timeout_sec,
            tag=self.tag or "",
        )


class ExecResponse(BaseModel):
    sandbox_id: str
    cmd: str
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int
    encoding: Literal["utf-8", "base64"]
    truncated: bool = Field(
        False,
        description="stdout or stderr was cut to the server's limit (1 MiB each by default); "
        "the command itself ran to its end. Use the WebSocket exec stream for all the output.",
    )

    @classmethod
    def of(cls, wire_id: str, cmd: str, res: pb.ExecResponse, duration_ms: int) -> ExecResponse:
        try:
            out = _utf8(res.stdout, res.stdout_truncated)
            err = _utf8(res.stderr, res.stderr_truncated)
            encoding = "utf-8"
        except UnicodeDecodeError:
            out = base64.b64encode(res.stdout).decode()
            err = base64.b64encode(res.stderr).decode()
            encoding = "base64"
        return cls(
            sandbox_id=wire_id,
            cmd=cmd,
            stdout=out,
            stderr=err,
            exit_code=res.exit_code,
            duration_ms=duration_ms,
            encoding=encoding,  # type: ignore[arg-type]
            truncated=res.stdout_truncated or res.stderr_truncated,
        )


def _utf8(data: bytes, cut: bool) -> str:
    """`data` as text; output cut at the limit may end inside a character, which is dropped
    rather than turning the whole answer into base64."""
    if not cut:
        return data.decode()
    return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)


class BackgroundExecResponse(BaseModel):
    sandbox_id: str
    cmd: str
    pid: int
    tag: str


class ProcessEntry(BaseModel):
    pid: int
    tag: str
    cmd: str
    args: list[str]

    @classmethod
    def of(cls, p: pb.ProcessInfo) -> ProcessEntry:
        # A process started without a tag is addressed by its pid.
        return cls(pid=p.pid, tag=p.tag or str(p.pid), cmd=p.cmd, args=list(p.args))


class ProcessListResponse(BaseModel):
    processes: list[ProcessEntry]


class PathRequest(BaseModel):
    path: str = Field(min_length=1, max_length=4096)


LIST_LIMIT = 10000


class ListDirRequest(PathRequest):
    depth: int = Field(1, ge=0, le=32)
    limit: int = Field(
        LIST_LIMIT,
        ge=1,
        le=LIST_LIMIT,
        description="Most entries returned, in path order (10000 at most).",
    )
    cursor: str | None = Field(
        None,
        max_length=8192,
        description="`next_cursor` of the previous page: list the entries after it.",
    )


class FileEntry(BaseModel):
    name: str
    path: str
    type: Literal["file", "directory", "symlink"]
    size: int
    mode: int
    permissions: str
    owner: str
    group: str
    modified_at: int
    symlink_target: str | None = None

    @classmethod
    def of(cls, e: pb.FileEntry) -> FileEntry:
        kind: Any = {"dir": "directory", "symlink": "symlink"}.get(e.type, "file")
        return cls(
            name=e.name,
            path=e.path,
            type=kind,
            size=e.size,
            mode=e.mode,
            permissions=e.permissions,
            owner=e.owner,
            group=e.group,
            modified_at=e.modified_at.seconds,
            symlink_target=e.symlink_target or None,
        )


class ListDirResponse(BaseModel):
    entries: list[FileEntry]
    truncated: bool = Field(
        False, description="More entries follow: ask again with `cursor` = `next_cursor`."
    )
    next_cursor: str | None = None


class MakeDirResponse(BaseModel):
    entry: FileEntry


class CreateSnapshotRequest(BaseModel):
    sandbox_id: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TemplateOut(BaseModel):
    name: str
    type: Literal["base", "snapshot"]
    vcpus: int | None = None
    memory_mb: int | None = None
    size_bytes: int
    created_at: dt.datetime
    platform: bool = Field(
        False, description="A platform template, visible to every team (else the team's own)."
    )
    protected: bool = Field(
        False,
        description="The platform's base template, which capsules are created from by "
        "default: it cannot be deleted.",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="A snapshot's: the `metadata` of the capsule it was taken from.",
    )

    @classmethod
    def of(cls, t: Template, *, base_template: str) -> TemplateOut:
        """`base_template`: the platform's base template's name (settings), the protected one."""
        platform = t.team_id == ids.PLATFORM_TEAM_ID
        return cls(
            name=t.name,
            type=t.type,  # type: ignore[arg-type]
            vcpus=t.vcpus,
            memory_mb=t.memory_mb,
            size_bytes=t.size_bytes,
            created_at=t.created_at,
            platform=platform,
            protected=platform and t.name == base_template,
            metadata=dict(t.meta or {}),
        )
