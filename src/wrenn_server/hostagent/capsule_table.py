"""The capsules of this host as the agent knows them: each by id, its lock (one lifecycle
operation at a time) and, while it runs, the client of its envd."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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
        # A lock lives while someone holds or waits for it (the count): a destroyed capsule's
        # or a failed create's lock goes with its last user, never leaks, never is swapped for
        # a second one while a waiter still holds the first.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def get(self, sandbox_id: str) -> Capsule:
        validate_sandbox_id(sandbox_id)
        try:
            return self.capsules[sandbox_id]
        except KeyError:
            raise errors.NotFound(f"sandbox {sandbox_id} not found") from None

    @contextlib.asynccontextmanager
    async def lock(self, sandbox_id: str) -> AsyncIterator[None]:
        """One lifecycle operation on a capsule at a time. Whoever waited must re-check the
        capsule (`current`): the operation before it may have destroyed it."""
        lock, users = self._locks.get(sandbox_id, (asyncio.Lock(), 0))
        self._locks[sandbox_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[sandbox_id]
            if users == 1:
                del self._locks[sandbox_id]
            else:
                self._locks[sandbox_id] = (lock, users - 1)

    def lock_users(self, sandbox_id: str) -> int:
        """How many operations hold or wait for the capsule's lock."""
        return self._locks.get(sandbox_id, (None, 0))[1]

    def current(self, capsule: Capsule) -> None:
        """Under the capsule's lock: it is still this host's (not destroyed, nor discarded by
        a failed create, while the caller waited)."""
        if self.capsules.get(capsule.sandbox_id) is not capsule:
            raise errors.NotFound(f"sandbox {capsule.sandbox_id} not found")

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
        client = EnvdClient(str(capsule.net.capsule_ip), self.settings.envd_port, capsule.token)
        client.before_use = lambda: self.wake(capsule)
        return client

    def wake(self, capsule: Capsule) -> None:
        """Runs before anything reaches the capsule's sandbox (SandboxManager thaws it if it
        dozes, see doze.py)."""

    def in_use(self, sandbox_id: str) -> int:
        """Requests and streams open now to the capsule's envd."""
        client = self.clients.get(sandbox_id)
        return client.in_use if client is not None else 0

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
