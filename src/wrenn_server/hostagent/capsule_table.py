"""The capsules of this host as the agent knows them: each by id, its lock (one lifecycle
operation at a time) and, while it runs, the client of its envd."""

from __future__ import annotations

import asyncio
from typing import Any

from . import errors
from .capsule import DEAD, RUNNING, Capsule, validate_sandbox_id
from .config import AgentSettings
from .envd_client import EnvdClient


class CapsuleTable:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.capsules: dict[str, Capsule] = {}
        self.clients: dict[str, EnvdClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, sandbox_id: str) -> Capsule:
        validate_sandbox_id(sandbox_id)
        try:
            return self.capsules[sandbox_id]
        except KeyError:
            raise errors.NotFound(f"sandbox {sandbox_id} not found") from None

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def forget_lock(self, sandbox_id: str) -> None:
        self._locks.pop(sandbox_id, None)

    def envd(self, sandbox_id: str, activity: bool = True) -> EnvdClient:
        """The agent of a running capsule; counts as activity for the TTL reaper unless the
        caller only looks (`activity=False`)."""
        capsule = self.get(sandbox_id)
        if capsule.status == DEAD:
            raise died(capsule)
        if capsule.status != RUNNING:
            raise errors.InvalidState(f"sandbox {sandbox_id} is {capsule.status}, not running")
        if activity:
            capsule.touch()
        return self.clients[sandbox_id]

    def new_client(self, capsule: Capsule) -> EnvdClient:
        assert capsule.net is not None
        return EnvdClient(str(capsule.net.capsule_ip), self.settings.envd_port, capsule.token)

    def connect(self, capsule: Capsule) -> EnvdClient:
        client = self.clients[capsule.sandbox_id] = self.new_client(capsule)
        return client

    async def disconnect(self, sandbox_id: str) -> None:
        client = self.clients.pop(sandbox_id, None)
        if client:
            await client.aclose()

    async def disconnect_all(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    def explain(self, request: Any, error: Exception) -> Exception:
        """The error to answer a failed call with: a call about a capsule that died meanwhile
        (its agent vanished under it) fails because it died, and says so."""
        capsule = self.capsules.get(getattr(request, "sandbox_id", "") or "")
        if capsule is not None and capsule.status == DEAD:
            return died(capsule)
        return error


def died(capsule: Capsule) -> errors.InvalidState:
    return errors.InvalidState(
        f"capsule {capsule.sandbox_id} is dead: its sandbox stopped ({capsule.exit_reason}); "
        "destroy it"
    )
