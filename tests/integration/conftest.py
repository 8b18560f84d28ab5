"""Fixtures for tests that run real gVisor capsules through a real host agent process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..waiting import wait_for as wait_for  # shared with the other tiers
from .netfixtures import AGENT_NETWORK_ENV

pytestmark = pytest.mark.integration

DATA_DIR = Path(os.environ.get("WRENN_TEST_DATA_DIR", "/var/lib/wrenn-test"))
SECRET = "integration-test-secret"

# Every agent a test starts inherits these (see netfixtures): they share the host's firewall.
os.environ.update(AGENT_NETWORK_ENV)
# The warm pool keeps its default shape only (it does not adapt to the shapes tests create): a
# test's create of another shape boots, as many tests need. test_pool turns adapting on.
os.environ.setdefault("WRENN_AGENT_POOL_MAX", "0")


@dataclass
class AgentProcess:
    """A host agent running as its own process, as in production, so tests can kill -9 it."""

    data_dir: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> None:
        env = {
            **os.environ,
            "WRENN_AGENT_SECRET": SECRET,
            "WRENN_AGENT_CAPSULE_SUBNET": "10.201.0.0/16",
            **self.env,
        }
        argv = [sys.executable, "-m", "wrenn_server.cli", "agent",
                "--data-dir", str(self.data_dir), "--listen", self.target]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.1)
        raise RuntimeError("agent did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


CapsuleFactory = Callable[..., Awaitable[pb.Sandbox]]


@pytest.fixture
async def new_capsule(agent: AgentClient) -> AsyncIterator[CapsuleFactory]:
    """Create capsules that are destroyed after the test, whatever happens."""
    made: list[str] = []

    async def make(**kw: object) -> pb.Sandbox:
        sb = await agent.create_sandbox(pb.CreateSandboxRequest(**kw))
        made.append(sb.sandbox_id)
        return sb

    yield make
    for sandbox_id in made:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sandbox_id))


@pytest.fixture
async def capsule(new_capsule: CapsuleFactory) -> pb.Sandbox:
    return await new_capsule()


async def run(agent: AgentClient, sandbox_id: str, cmd: str, **kw: object) -> pb.ExecResponse:
    return await agent.exec(pb.ExecRequest(sandbox_id=sandbox_id, cmd=cmd, **kw))


# The base template's default user, as whom commands run when no user is named.
DEFAULT_USER = "wrenn-user"
HOME = f"/home/{DEFAULT_USER}"


async def run_as_root(
    agent: AgentClient, sandbox_id: str, cmd: str, **kw: object
) -> pb.ExecResponse:
    """`run` as the capsule's root unless another user is named. Attacks run this way: root is
    the strongest code in a capsule (its default user reaches it with sudo), so what holds
    against it holds against everyone there."""
    kw.setdefault("user", "root")
    return await run(agent, sandbox_id, cmd, **kw)


# -- REST API tests (tests/integration/test_rest_*.py) -------------------------------------
# The control plane in-process over this agent; see rest_fixtures.py. pg_cluster is the control
# plane tests' throwaway PostgreSQL cluster.
from .rest_fixtures import (  # noqa: E402, F401
    api,
    rest_databases,
    rest_db,
    rest_dialect,
    start_app,
)
