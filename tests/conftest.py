"""Session-wide fixtures shared by several test tiers, defined once so that each exists once
per session: the throwaway PostgreSQL cluster, a Redis server, and the host agent process that
integration and dashboard tests drive (one agent per data dir: a second would be refused)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
from argon2 import PasswordHasher

from tests.controlplane.pgcluster import PgCluster, find_pg_bin, start_cluster
from tests.controlplane.redisserver import redis_server
from tests.integration.conftest import DATA_DIR, SECRET, AgentProcess
from tests.ports import free_port
from wrenn_server.agentproto.client import AgentClient

# Most tests make their accounts through the API's signup. The product's default is closed
# signup; the tests of that setting pass it explicitly, and `wrenn up`'s test unsets this.
os.environ.setdefault("WRENN_SIGNUP", "open")


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashes() -> Iterator[None]:
    """argon2id with the least work for the in-process control planes: nearly every test signs
    up and logs in, and the product's cost (argon2-cffi's defaults, kept by processes the tests
    start, e.g. `wrenn up`) would be most of the fast tiers' time. Hashing and verifying still
    run for real."""
    from wrenn_server.controlplane import security

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(security, "_hasher", cheap)
        patch.setattr(security, "_DUMMY_HASH", cheap.hash("unused"))
        yield


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        if os.environ.get("WRENN_TEST_SKIP_POSTGRES") == "1":
            pytest.skip("PostgreSQL not installed and WRENN_TEST_SKIP_POSTGRES=1")
        pytest.fail("PostgreSQL binaries not found (install postgresql or set WRENN_TEST_PG_BIN)")
    cluster = start_cluster(bin_dir)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server for the session (the template build queue)."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def agent_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (mounts, namespaces, gVisor)")
    log_path = tmp_path_factory.mktemp("agent") / "agent.log"
    # Boot snapshots a run before this one kept: the session starts as a new host would (tests
    # count on a shape's first create booting). Only the kept ones, files: the agent unmounts
    # and removes a half-made one itself.
    for kept in (DATA_DIR / "boot-snapshots").glob("sb-*"):
        shutil.rmtree(kept, ignore_errors=True)
    agent = AgentProcess(DATA_DIR, free_port(), log_path)
    agent.start()
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
async def agent(agent_process: AgentProcess) -> AsyncIterator[AgentClient]:
    async with AgentClient(agent_process.target, SECRET) as client:
        yield client
