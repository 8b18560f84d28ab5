"""A fake capsule and a fake template: the state the agent keeps, with its rules (what each
status allows, and the messages refusals carry)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .errors import Refused, invalid, not_found, wrong_state
from .files import DEFAULT_USER, FileTree, timestamp
from .processes import FakeProcess, Spec

RUNNING = "running"
PAUSED = "paused"
DEAD = "dead"
IMAGE = "image"
SNAPSHOT = "snapshot"

# As the agent checks them (hostagent/capsule.py, templates.py): matched whole.
SANDBOX_ID_RE = re.compile(r"sb-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# What a real agent reports of every capsule: its host's runtime and agent, the capsule's envd.
VERSIONS = {"vmm_version": "release-fake.0", "agent_version": "0.1.0", "envd_version": "0.1.0"}


def check_sandbox_id(sandbox_id: str) -> str:
    if not SANDBOX_ID_RE.fullmatch(sandbox_id):
        raise invalid("sandbox_id must look like sb-{uuid}")
    return sandbox_id


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise invalid("template name must be 1-128 characters of letters, digits, '.', '_' or '-'")
    return name


def new_sandbox_id() -> str:
    return f"sb-{uuid.uuid4()}"


@dataclass
class FakeTemplate:
    name: str
    type: str
    files: FileTree = field(default_factory=FileTree)
    users: set[str] = field(default_factory=lambda: {"root", "user", DEFAULT_USER})
    base: str = ""
    # Who commands and file operations act as when the caller names nobody ("": root).
    default_user: str = ""
    vcpus: int = 0
    memory_mb: int = 0
    disk_size_mb: int = 0
    created_at: float = field(default_factory=time.time)

    @property
    def size_bytes(self) -> int:
        return 4096 + sum(len(node.data) for node in self.files.nodes.values())

    def message(self) -> pb.Template:
        kind = pb.TEMPLATE_TYPE_SNAPSHOT if self.type == SNAPSHOT else pb.TEMPLATE_TYPE_IMAGE
        return pb.Template(
            name=self.name,
            type=kind,
            size_bytes=self.size_bytes,
            created_at=timestamp(self.created_at),
            base=self.base,
        )


@dataclass
class FakeSandbox:
    sandbox_id: str
    template: str
    base_image: str
    vcpus: int
    memory_mb: int
    disk_size_mb: int
    timeout_sec: int
    files: FileTree
    users: set[str]
    programs: Mapping[str, Callable[[Any], Awaitable[int]]]
    default_user: str = ""
    default_env: dict[str, str] = field(default_factory=dict)
    status: str = RUNNING
    auto_paused: bool = False
    exit_reason: str = ""
    # The versions it reports (set when it starts or resumes, from FakeHostAgent.versions).
    versions: dict[str, str] = field(default_factory=lambda: dict(VERSIONS))
    created_at: float = field(default_factory=time.time)
    last_active_at: float = field(default_factory=time.time)
    processes: dict[int, FakeProcess] = field(default_factory=dict)
    next_pid: int = 100
    # Ports a tunnel reaches: the capsule's port -> a local (host, port) the test serves.
    ports: dict[int, tuple[str, int]] = field(default_factory=dict)
    # What ListPorts reports of a port: (address, pid, command); a port a tunnel reaches that
    # is not named here listens on every address, its process unknown.
    listening: dict[int, tuple[str, int | None, str | None]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        template: FakeTemplate,
        sandbox_id: str,
        programs: Mapping[str, Callable[[Any], Awaitable[int]]],
        **values: Any,
    ) -> FakeSandbox:
        """A capsule of `template`, with a copy of its files and users; `values` set its other
        fields (sizes default to the agent's: 1 vCPU, 512 MiB, 5 GiB of disk)."""
        snap = template.type == SNAPSHOT
        sizes = {"vcpus": 1, "memory_mb": 512, "disk_size_mb": 5120, "timeout_sec": 0}
        return cls(
            sandbox_id=sandbox_id,
            template=template.name,
            base_image=template.base if snap and template.base else template.name,
            files=template.files.copy(),
            users=set(template.users),
            programs=programs,
            **{**sizes, **values},
        )

    def touch(self) -> None:
        self.last_active_at = time.time()

    def listening_ports(self) -> list[pb.ListeningPort]:
        known = {port: ("0.0.0.0", None, None) for port in self.ports} | self.listening
        return [
            pb.ListeningPort(port=port, address=address, pid=pid, command=command)
            for port, (address, pid, command) in sorted(known.items())
        ]

    def message(self) -> pb.Sandbox:
        status = {
            RUNNING: pb.SANDBOX_STATUS_RUNNING,
            PAUSED: pb.SANDBOX_STATUS_PAUSED,
            DEAD: pb.SANDBOX_STATUS_DEAD,
        }[self.status]
        return pb.Sandbox(
            sandbox_id=self.sandbox_id,
            status=status,
            template=self.template,
            vcpus=self.vcpus,
            memory_mb=self.memory_mb,
            disk_size_mb=self.disk_size_mb,
            timeout_sec=self.timeout_sec,
            created_at=timestamp(self.created_at),
            last_active_at=timestamp(self.last_active_at),
            auto_paused=self.auto_paused,
            exit_reason=self.exit_reason,
            metadata=self.versions,
        )

    def died_error(self) -> Refused:
        return wrong_state(
            f"capsule {self.sandbox_id} is dead: its sandbox stopped ({self.exit_reason}); "
            "destroy it"
        )

    def require_running(self, activity: bool = True) -> None:
        """What every in-capsule call checks first; counts as activity unless the caller only
        looks."""
        if self.status == DEAD:
            raise self.died_error()
        if self.status != RUNNING:
            raise wrong_state(f"sandbox {self.sandbox_id} is {self.status}, not running")
        if activity:
            self.touch()

    # -- processes ---------------------------------------------------------------------------

    def start(self, spec: Spec, main: Callable[[FakeProcess], Any]) -> FakeProcess:
        self.require_running()
        spec.user = spec.user or self.default_user or "root"
        spec.env = {**self.default_env, **spec.env}
        name = spec.argv[0].rsplit("/", 1)[-1]
        if not spec.shell and name not in self.programs:
            raise not_found(f"program not found: {spec.argv[0]}")
        self.next_pid += 1
        proc = FakeProcess(self.next_pid, spec, self.files, self.users, self.programs)
        self.processes[proc.pid] = proc
        proc.start(main)
        return proc

    def process(self, pid: int) -> FakeProcess:
        self.require_running()
        try:
            return self.processes[pid]
        except KeyError:
            raise not_found(f"no such process: {pid}") from None

    # -- endings -----------------------------------------------------------------------------

    def die(self, reason: str) -> None:
        """The sandbox stopped on its own: calls in flight fail, only destroy is left."""
        self.status, self.exit_reason = DEAD, reason
        error = self.died_error()
        for proc in self.processes.values():
            proc.die(error)

    def discard(self) -> None:
        """Destroyed: the capsule's agent is gone under any stream still open."""
        gone = Refused(grpc.StatusCode.UNAVAILABLE, "capsule agent is not reachable")
        for proc in self.processes.values():
            proc.die(gone)
        self.processes.clear()
