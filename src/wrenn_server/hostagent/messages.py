"""The agent's domain objects as protobuf messages, and requests as what envd takes."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from ..proto.hostagent.v1 import hostagent_pb2 as pb
from . import errors
from .capsule import DEAD, PAUSED, RUNNING, Capsule
from .envd_types import Event, FileEntry, PortInfo, ProcessInfo, ProcessSpec, WatchEvent
from .metrics import Point
from .templates import SNAPSHOT, Template
from .versions import ENVD_VERSION


def ts(epoch: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(epoch * 1e9))
    return t


def sandbox_msg(c: Capsule, versions: Mapping[str, str], dozing: bool = False) -> pb.Sandbox:
    """`c` as the control plane sees it; `versions` are the host's (runtime, agent)."""
    status = {
        RUNNING: pb.SANDBOX_STATUS_RUNNING,
        PAUSED: pb.SANDBOX_STATUS_PAUSED,
        DEAD: pb.SANDBOX_STATUS_DEAD,
    }
    return pb.Sandbox(
        sandbox_id=c.sandbox_id,
        status=status.get(c.status, pb.SANDBOX_STATUS_STARTING),
        template=c.template,
        vcpus=c.vcpus,
        memory_mb=c.memory_mb,
        disk_size_mb=c.disk_size_mb,
        timeout_sec=c.timeout_sec,
        created_at=ts(c.created_at),
        last_active_at=ts(c.last_active_at),
        auto_paused=c.auto_paused,
        exit_reason=c.exit_reason,
        metadata={**versions, ENVD_VERSION: c.envd_version} if c.envd_version else versions,
        dozing=dozing,
    )


def template_msg(t: Template) -> pb.Template:
    kind = pb.TEMPLATE_TYPE_SNAPSHOT if t.type == SNAPSHOT else pb.TEMPLATE_TYPE_IMAGE
    return pb.Template(
        name=t.name,
        type=kind,
        size_bytes=t.size_bytes,
        created_at=ts(t.created_at),
        base=t.base or "",
    )


def entry_msg(e: FileEntry) -> pb.FileEntry:
    return pb.FileEntry(
        name=e["name"],
        path=e["path"],
        type=e["type"],
        size=e["size"],
        mode=e["mode"],
        permissions=e["permissions"],
        owner=e["owner"],
        group=e["group"],
        modified_at=ts(e["modified_at"]),
        symlink_target=e.get("symlink_target") or "",
    )


def event_msg(ev: Event) -> pb.ProcessEvent:
    if ev["type"] == "start":
        return pb.ProcessEvent(start=pb.ProcessEvent.Start(pid=ev["pid"]))
    if ev["type"] == "stdout":
        return pb.ProcessEvent(stdout=ev["data"])
    if ev["type"] == "stderr":
        return pb.ProcessEvent(stderr=ev["data"])
    return pb.ProcessEvent(
        exit=pb.ProcessEvent.Exit(exit_code=ev["exit_code"], signal=ev.get("signal") or 0)
    )


_FS_EVENT_TYPES = {
    "create": pb.FS_EVENT_TYPE_CREATE,
    "write": pb.FS_EVENT_TYPE_WRITE,
    "remove": pb.FS_EVENT_TYPE_REMOVE,
    "rename": pb.FS_EVENT_TYPE_RENAME,
    "chmod": pb.FS_EVENT_TYPE_CHMOD,
    "overflow": pb.FS_EVENT_TYPE_OVERFLOW,
    "started": pb.FS_EVENT_TYPE_STARTED,
}


def fs_event_msg(ev: WatchEvent) -> pb.FsEvent:
    return pb.FsEvent(type=_FS_EVENT_TYPES[ev["op"]], name=ev["name"])


def process_spec(r: pb.ExecRequest) -> ProcessSpec:
    if not r.cmd and not r.argv:
        raise errors.InvalidArgument("cmd or argv is required")
    return {
        "cmd": r.argv[0] if r.argv else r.cmd,
        "args": list(r.argv[1:]) if r.argv else None,
        "env": dict(r.env) or None,
        "cwd": r.cwd or None,
        "user": r.user or None,
        "stdin": r.stdin,
        "pty": {"cols": r.pty.cols, "rows": r.pty.rows} if r.HasField("pty") else None,
        "tag": r.tag or None,
    }


def metrics_msg(tiers: dict[str, list[Point]]) -> pb.SandboxMetrics:
    return pb.SandboxMetrics(
        tiers=[
            pb.MetricTier(
                name=name,
                points=[
                    pb.MetricPoint(
                        timestamp_ms=int(p.ts * 1000),
                        cpu_pct=p.cpu_pct,
                        mem_bytes=p.mem_bytes,
                        disk_bytes=p.disk_bytes,
                    )
                    for p in points
                ],
            )
            for name, points in tiers.items()
        ]
    )


def port_msg(p: PortInfo) -> pb.ListeningPort:
    return pb.ListeningPort(
        port=p["port"], address=p["address"], pid=p["pid"], command=p["command"]
    )


def process_msg(p: ProcessInfo) -> pb.ProcessInfo:
    return pb.ProcessInfo(
        pid=p["pid"],
        cmd=p["cmd"],
        args=p.get("args") or [],
        cwd=p.get("cwd") or "",
        user=p.get("user") or "",
        tag=p.get("tag") or "",
        pty=bool(p.get("pty")),
        running=bool(p["running"]),
        exit_code=p.get("exit_code"),
        started_at=ts(p["started_at"]),
    )
