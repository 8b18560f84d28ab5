"""Host agent settings, from the environment (prefix WRENN_AGENT_)."""

from __future__ import annotations

import hashlib
import json
from ipaddress import IPv4Network
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, IPvAnyAddress, IPvAnyNetwork, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import StartupError

DEFAULT_SECRET = "dev-agent-secret"


def _list(value: Any) -> Any:
    """A JSON list, or addresses separated by commas or spaces (easier to write in a unit
    file)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part for part in text.replace(",", " ").split() if part]
    return value


Networks = Annotated[list[IPvAnyNetwork], NoDecode, BeforeValidator(_list)]
Addresses = Annotated[list[IPvAnyAddress], NoDecode, BeforeValidator(_list)]


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WRENN_AGENT_", extra="ignore")

    data_dir: Path = Field(
        default=Path("/var/lib/wrenn"),
        description="Templates, capsule disks and checkpoints live here.",
    )
    listen: str = Field(default="127.0.0.1:50051", description="host:port of the gRPC server.")
    secret: str = Field(
        default=DEFAULT_SECRET,
        description="Shared secret the control plane presents on every call (single box; a "
        "registered host gets its own). The built-in default is refused.",
    )
    capsule_subnet: IPv4Network = Field(
        default=IPv4Network("10.200.0.0/16"),
        description="Private range carved into one /30 per capsule (host side .1, capsule .2).",
    )
    capsule_dns: list[str] = Field(
        default_factory=list,
        description="Resolvers written into capsules' /etc/resolv.conf. Empty: the agent's own "
        "DNS forwarder (169.254.53.53 in the capsule, served on its gateway), which asks the "
        "upstream resolvers.",
    )
    upstream_dns: Addresses = Field(
        default_factory=list,
        description="Resolvers the capsule DNS forwarder asks (comma-separated). Empty: the "
        "nameservers of the host's /etc/resolv.conf, re-read when it changes. Capsules cannot "
        "reach them directly unless allowed with egress_allow.",
    )
    capsule_dns_qps: float = Field(
        default=100.0,
        gt=0,
        description="DNS queries per second a capsule may send to the forwarder (bursts of "
        "twice that); the rest are dropped.",
    )
    egress_allow: Networks = Field(
        default_factory=list,
        description="Ranges capsules may reach although blocked by default (comma-separated "
        "CIDRs; e.g. an internal package mirror): special-purpose ranges, the host's connected "
        "subnets and its resolvers. The host itself and other capsules stay unreachable.",
    )
    egress_block: Networks = Field(
        default_factory=list,
        description="More ranges capsules may not reach (comma-separated CIDRs). Wins over "
        "egress_allow.",
    )
    runsc: str = Field(default="runsc", description="Path of the gVisor runsc binary.")
    envd_port: int = Field(default=49983, description="Port of the in-capsule agent.")
    default_template: str = Field(
        default="minimal", description="Template used when none is named."
    )
    default_vcpus: int = Field(default=1, ge=1, le=64)
    default_memory_mb: int = Field(default=512, ge=64)
    default_disk_size_mb: int = Field(default=5120, ge=64)
    pids_limit: int = Field(
        default=1024,
        ge=16,
        description="Most host tasks a capsule's sandbox may hold (fork bombs).",
    )
    pool_size: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Capsules of the default shape kept booted, so creating one takes ms "
        "(0 = no warm pool at all, not even for the shapes pool_max adapts to).",
    )
    pool_max: int = Field(
        default=4,
        ge=0,
        le=64,
        description="Most capsules the warm pool holds ready across all shapes (template, "
        "vCPUs, memory, disk), pool_size included: beyond pool_size it keeps capsules of the "
        "shapes created lately, as many as were created of each over pool_demand_window_sec. "
        "At most pool_size: the pool does not adapt. Pooled capsules count against the memory "
        "limit and give way to any create that needs their room.",
    )
    boot_snapshots: int = Field(
        default=8,
        ge=0,
        le=256,
        description="Shapes (template, vCPUs, memory, disk) whose just-booted capsule is kept "
        "checkpointed on disk, so a create the warm pool cannot serve restores it instead of "
        "booting (~100 ms less). The first create of a shape boots and has its snapshot made in "
        "the background; the least recently used is dropped beyond this many. Each costs the "
        "disk of a booted capsule's memory image (tens of MB); 0: none.",
    )
    pool_demand_window_sec: float = Field(
        default=60.0,
        gt=0,
        description="The window creates are counted over for the warm pool: a shape gets as "
        "many ready capsules as were created of it this recently (at least one while it was "
        "created within pool_idle_sec).",
    )
    pool_idle_sec: float = Field(
        default=300.0,
        gt=0,
        description="A shape not created for this long has no capsules kept ready any more "
        "(the default shape keeps pool_size); its pooled capsules are discarded.",
    )
    reaper_interval_sec: float = Field(default=2.0, gt=0, description="TTL reaper period.")
    disk_release_timeout_sec: float = Field(
        default=30.0,
        gt=0,
        description="How long a stopped sandbox may take to let go of its capsule's disk image "
        "(measured in docs/performance.md): a pause waits this long, then ends paused anyway; a "
        "resume or snapshot that needs the image still held after this long is refused "
        "(retryable) and the capsule stays paused.",
    )
    doze_after_sec: float = Field(
        default=30.0,
        ge=0,
        description="Freeze a running capsule's sandbox (its cgroup) once it has been idle this "
        "long: no request, no open stream or tunnel, no network traffic, CPU at gVisor's idle "
        "floor; thawed before anything reaches it (0 = never). Its processes and timers stop "
        "meanwhile.",
    )
    doze_max_cpu_pct: float = Field(
        default=5.0,
        gt=0,
        le=100,
        description="Most CPU (% of one core, over the quiet period) a capsule may use and still "
        "doze: above gVisor's idle floor (~2.5% on systrap), below a process doing work.",
    )
    memory_reserve_mb: int = Field(
        default=512,
        ge=0,
        description="Memory kept for the host itself: while less than this is available "
        "(MemAvailable), capsules are neither booted nor resumed; and the memory limits of "
        "live capsules add up to at most total memory x memory_overcommit less this.",
    )
    memory_overcommit: float = Field(
        default=1.0,
        gt=0,
        le=16,
        description="How far the memory limits of this host's live capsules (starting, running, "
        "pooled) may add up beyond its physical memory: 1.0 never promises more than it has.",
    )
    disk_reserve_mb: int = Field(
        default=2048,
        ge=0,
        description="Disk kept free on the data dir: a capsule is created only if its whole "
        "disk fits in the free space less this.",
    )

    control_plane_url: str | None = Field(
        default=None,
        description="Base URL of the control plane to register with and heartbeat to "
        "(http(s)://host:port). Unset: a single box, whose control plane names this agent in "
        "WRENN_AGENT_ADDRESS and shares WRENN_AGENT_SECRET with it.",
    )
    registration_token: SecretStr | None = Field(
        default=None,
        description="One-time token from POST /v1/hosts, used on the first start only; the "
        "credentials it buys are kept in <data_dir>/host-credentials.json.",
    )
    advertise_address: str | None = Field(
        default=None,
        description="Address the control plane dials to reach this agent (ip:port or "
        "unix:///path). Default: the listen address.",
    )
    heartbeat_interval_sec: float = Field(
        default=20.0, gt=0, description="How often the agent tells the control plane it lives."
    )
    pause_after_cp_lost_sec: float = Field(
        default=600.0,
        ge=0,
        description="Pause every capsule once the control plane has been unreachable this long "
        "(0 = never). Capsules are also paused when the control plane refuses the host's "
        "credentials (the host was deleted or its tokens revoked).",
    )

    def check_secret(self) -> None:
        """Refuse to serve with the built-in secret: anyone who can reach the socket would
        command the host's capsules."""
        if not self.control_plane_url and self.secret == DEFAULT_SECRET:
            raise StartupError(
                "refusing to serve with the built-in secret: set WRENN_AGENT_SECRET, or register "
                "with WRENN_AGENT_CONTROL_PLANE_URL and WRENN_AGENT_REGISTRATION_TOKEN"
            )

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / "host-credentials.json"

    @property
    def templates_dir(self) -> Path:
        return self.data_dir / "templates"

    @property
    def capsules_dir(self) -> Path:
        return self.data_dir / "capsules"

    @property
    def boot_snapshots_dir(self) -> Path:
        return self.data_dir / "boot-snapshots"

    @property
    def run_dir(self) -> Path:
        """Volatile state (runsc's root): lost on reboot, like the sandboxes it describes.

        Keyed by the data dir so several agents can share a host.
        """
        key = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
        return Path("/run/wrenn") / key
