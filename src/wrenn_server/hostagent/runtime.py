"""The isolation backend behind the agent. The gRPC servicer and the manager only see `Runtime`,
so another backend (a microVM on hosts with real KVM) can sit beside gVisor."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .capsule import Capsule
from .templates import Template

# The longest the agent waits for a destroy or teardown before it moves on (and logs).
CLEANUP_TIMEOUT = 60.0


class Runtime(Protocol):
    async def prepare(self) -> None:
        """Host-wide setup at agent start (firewall, directories)."""

    def checkpoint_stamp(self) -> str:
        """What a checkpoint written now is tied to (checkpoint_stamp.py): one kept across
        restarts is restored only under the same stamp."""

    async def create(self, capsule: Capsule, snapshot: Path | None = None) -> None:
        """Make and boot the capsule: from its image template, or by restoring a snapshot (a
        directory with `checkpoint/` and `disk.img`: its snapshot template's unless given).
        On failure nothing of it is left behind."""

    async def destroy(self, capsule: Capsule) -> None:
        """Remove every trace: processes, mounts, network, files. Idempotent, never raises."""

    async def teardown(self, capsule: Capsule) -> None:
        """Stop the running parts (sandbox, network, mounts) and keep the capsule's files."""

    def drop_checkpoint(self, capsule: Capsule) -> None:
        """Delete the checkpoint a resumed capsule no longer needs."""

    async def pause(self, capsule: Capsule) -> None:
        """Checkpoint memory and keep the disk, then tear the running parts down."""

    async def resume(self, capsule: Capsule) -> None:
        """Boot a paused capsule from its checkpoint. A restore that fails leaves it as it was
        (paused, checkpoint kept) and raises `errors.RestoreFailed`."""

    async def snapshot(self, capsule: Capsule, name: str, overwrite: bool) -> Template:
        """Pause the capsule and turn its checkpoint and disk into a snapshot template."""

    async def flatten(self, capsule: Capsule, name: str, overwrite: bool) -> Template:
        """Copy the capsule's merged root filesystem into an image template (it keeps running)."""

    async def sandbox_pid(self, capsule: Capsule) -> int | None:
        """The host pid of the process whose exit means the capsule died, if it runs."""

    def sandbox_running(self, capsule: Capsule) -> bool:
        """Whether any process of the capsule's sandbox still runs."""

    def exit_reason(self, capsule: Capsule) -> str:
        """Why a capsule whose sandbox exited on its own died (before its teardown)."""

    async def recover(self) -> list[Capsule]:
        """After a restart: adopt live, paused and dead capsules, remove every other leftover."""
