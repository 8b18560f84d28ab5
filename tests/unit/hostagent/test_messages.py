"""The agent's objects as the wire messages the control plane reads (messages.py), and exec
requests as the process specs envd takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from wrenn_server.hostagent import errors
from wrenn_server.hostagent.capsule import DEAD, PAUSED, POOLED, RUNNING, STARTING, Capsule
from wrenn_server.hostagent.messages import (
    event_msg,
    metrics_msg,
    process_msg,
    process_spec,
    sandbox_msg,
    template_msg,
)
from wrenn_server.hostagent.metrics import Point
from wrenn_server.hostagent.templates import IMAGE, SNAPSHOT, Template
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

ID = "sb-00000000-0000-4000-8000-0000000000d1"


@pytest.mark.parametrize(
    ("status", "wire"),
    [
        (RUNNING, pb.SANDBOX_STATUS_RUNNING),
        (PAUSED, pb.SANDBOX_STATUS_PAUSED),
        (DEAD, pb.SANDBOX_STATUS_DEAD),
        (STARTING, pb.SANDBOX_STATUS_STARTING),
        (POOLED, pb.SANDBOX_STATUS_STARTING),
    ],
)
def test_sandbox(status: str, wire: int) -> None:
    capsule = Capsule(
        sandbox_id=ID,
        template="snap",
        base_image="minimal",
        vcpus=2,
        memory_mb=512,
        disk_size_mb=2048,
        timeout_sec=30,
        token="secret-token",
        dir=Path("/nonexistent"),
        status=status,
        auto_paused=True,
        exit_reason="out of memory",
        envd_version="0.1.0",
        created_at=1700000000.25,
        last_active_at=1700000001.5,
    )
    msg = sandbox_msg(capsule, {"vmm_version": "release-20240212.0", "agent_version": "0.1.0"})
    # The host's versions and the capsule's envd's, under the Go system's keys.
    assert dict(msg.metadata) == {
        "vmm_version": "release-20240212.0",
        "agent_version": "0.1.0",
        "envd_version": "0.1.0",
    }
    assert msg.status == wire
    assert (msg.sandbox_id, msg.template, msg.vcpus, msg.memory_mb) == (ID, "snap", 2, 512)
    assert (msg.disk_size_mb, msg.timeout_sec, msg.auto_paused) == (2048, 30, True)
    assert msg.exit_reason == "out of memory"
    # To the microsecond (a float's epoch seconds carry no more).
    assert abs(msg.created_at.ToNanoseconds() - 1700000000_250000000) < 1000
    assert msg.last_active_at.ToMilliseconds() == 1700000001500
    assert b"secret-token" not in msg.SerializeToString()


def test_templates() -> None:
    image = template_msg(Template(name="minimal", type=IMAGE, created_at=5, size_bytes=10))
    assert (image.type, image.base, image.size_bytes) == (pb.TEMPLATE_TYPE_IMAGE, "", 10)
    snap = template_msg(
        Template(name="s", type=SNAPSHOT, created_at=5, base="minimal", source_capsule=ID)
    )
    assert (snap.type, snap.base) == (pb.TEMPLATE_TYPE_SNAPSHOT, "minimal")


def test_events() -> None:
    assert event_msg({"type": "start", "pid": 9}).start.pid == 9
    assert event_msg({"type": "stdout", "data": b"\x00o"}).stdout == b"\x00o"
    assert event_msg({"type": "stderr", "data": b"e"}).stderr == b"e"
    killed = event_msg({"type": "exit", "exit_code": -1, "signal": 9})
    assert (killed.WhichOneof("event"), killed.exit.exit_code, killed.exit.signal) == (
        "exit",
        -1,
        9,
    )
    assert event_msg({"type": "exit", "exit_code": 3, "signal": None}).exit.signal == 0


def test_process_spec_from_argv_or_cmd() -> None:
    argv = process_spec(pb.ExecRequest(sandbox_id=ID, argv=["ls", "-l", "/a b"], cwd="/tmp"))
    assert argv == {
        "cmd": "ls",
        "args": ["-l", "/a b"],
        "env": None,
        "cwd": "/tmp",
        "user": None,
        "stdin": False,
        "pty": None,
        "tag": None,
    }
    # argv wins over cmd; cmd alone is a shell command line for envd.
    both = process_spec(pb.ExecRequest(cmd="echo hi", argv=["true"]))
    assert (both["cmd"], both["args"]) == ("true", [])
    shell = process_spec(
        pb.ExecRequest(
            cmd="echo $A",
            env={"A": "1"},
            user="bob",
            stdin=True,
            tag="t",
            pty=pb.PtySize(cols=80, rows=24),
        )
    )
    assert shell["cmd"] == "echo $A" and shell["args"] is None
    assert (shell["env"], shell["user"], shell["stdin"], shell["tag"]) == (
        {"A": "1"},
        "bob",
        True,
        "t",
    )
    assert shell["pty"] == {"cols": 80, "rows": 24}
    with pytest.raises(errors.InvalidArgument, match="cmd or argv is required"):
        process_spec(pb.ExecRequest(sandbox_id=ID))


def test_processes_and_metrics() -> None:
    info = process_msg(
        {"pid": 4, "cmd": "sleep", "running": False, "exit_code": 0, "started_at": 2.0}
    )
    assert (info.pid, info.cmd, list(info.args), info.cwd, info.pty) == (4, "sleep", [], "", False)
    assert info.HasField("exit_code") and info.exit_code == 0
    running = process_msg({"pid": 5, "cmd": "sh", "running": True, "started_at": 2.0})
    assert not running.HasField("exit_code")  # still running: no exit code, not 0
    tiers = metrics_msg({"10m": [Point(ts=1.5, cpu_pct=50.0, mem_bytes=7, disk_bytes=8)], "2h": []})
    assert [t.name for t in tiers.tiers] == ["10m", "2h"]
    point = tiers.tiers[0].points[0]
    assert (point.timestamp_ms, point.cpu_pct, point.mem_bytes, point.disk_bytes) == (
        1500,
        50.0,
        7,
        8,
    )
