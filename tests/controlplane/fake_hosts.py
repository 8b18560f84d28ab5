"""Host agents for control plane tests: the in-process fake agent (tests/fakeagent) behind the
real gRPC interface, reached through the real client pool."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from wrenn_server.controlplane.agents.pool import HostClientPool
from wrenn_server.controlplane.agents.scheduler import BalancedScheduler
from wrenn_server.controlplane.services import quotas
from wrenn_server.controlplane.services.capsules import Hosts

from ..fakeagent import FakeAgentServer

SECRET = "controlplane-test-agent-secret"


@pytest.fixture
async def fake_agent() -> AsyncIterator[FakeAgentServer]:
    """A fake agent; a test points a host row at its `target`."""
    async with FakeAgentServer(SECRET) as server:
        yield server


def fake_pool() -> HostClientPool:
    """A client pool presenting the fake agents' secret to every host."""
    return HostClientPool(lambda _host_id: SECRET)


def fake_hosts(limits: quotas.Limits = quotas.DEFAULT_LIMITS) -> Hosts:
    return Hosts(fake_pool(), BalancedScheduler(), limits)
