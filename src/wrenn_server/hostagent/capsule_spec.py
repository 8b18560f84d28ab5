"""What a caller asks a new capsule to be, checked and turned into a Capsule record."""

from __future__ import annotations

from dataclasses import dataclass

from . import errors
from .capsule import STARTING, Capsule, capsule_dir
from .config import AgentSettings
from .envd_keys import EnvdKeys
from .templates import SNAPSHOT, Template


@dataclass
class CreateSpec:
    sandbox_id: str = ""
    template: str = ""
    vcpus: int = 0
    memory_mb: int = 0
    disk_size_mb: int = 0
    timeout_sec: int = 0
    default_user: str = ""
    default_env: dict[str, str] | None = None


def new_capsule(
    settings: AgentSettings, sandbox_id: str, template: Template, spec: CreateSpec, keys: EnvdKeys
) -> Capsule:
    """The capsule `spec` asks for: a snapshot template's own size wins, then the caller's,
    then the agent's defaults."""
    s = settings
    snap = template.type == SNAPSHOT
    vcpus = (template.vcpus if snap else 0) or spec.vcpus or s.default_vcpus
    memory = (template.memory_mb if snap else 0) or spec.memory_mb or s.default_memory_mb
    disk = (template.disk_size_mb if snap else 0) or spec.disk_size_mb or s.default_disk_size_mb
    if not 1 <= vcpus <= 64:
        raise errors.InvalidArgument("vcpus must be between 1 and 64")
    if not 64 <= memory <= 262144:
        raise errors.InvalidArgument("memory_mb must be between 64 and 262144")
    if not 64 <= disk <= 1048576:
        raise errors.InvalidArgument("disk_size_mb must be between 64 and 1048576")
    if spec.timeout_sec < 0:
        raise errors.InvalidArgument("timeout_sec must not be negative")
    return Capsule(
        sandbox_id=sandbox_id,
        template=template.name,
        base_image=template.base if snap and template.base else template.name,
        vcpus=vcpus,
        memory_mb=memory,
        disk_size_mb=disk,
        timeout_sec=spec.timeout_sec,
        token=keys.token_for(sandbox_id),
        dir=capsule_dir(s.capsules_dir, sandbox_id),
        handle=sandbox_id,
        # A snapshot's envd already holds the default user it was taken with.
        default_user=spec.default_user or ("" if snap else template.default_user),
        default_env=dict(spec.default_env or {}),
        status=STARTING,
    )
