"""Which hosts hear of what: a template's deletion goes only to the hosts that hold its files,
never to another team's host, and such a host cannot hold anyone else's deletion up by
answering with an error; a BYOC host's address is checked again when the control plane dials it.

The agents are real gRPC servers on this machine speaking the HostAgent contract (they record
every call and answer as told); the control plane reaches them through its real client pool.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.ports import free_port
from wrenn_server.addresses import TenantAddressPolicy
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.agents.pool import HostClientPool
from wrenn_server.controlplane.agents.scheduler import BalancedScheduler
from wrenn_server.controlplane.db.models import Host, Sandbox, Template
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.services.capsules import Hosts
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb
from wrenn_server.proto.hostagent.v1 import hostagent_pb2_grpc as pb_grpc

from .helpers import assert_error, bearer, signup

LAB = TenantAddressPolicy.of(allowed=["127.0.0.0/8"])  # these agents all listen on loopback


class _Recorder(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.calls.append(details.method.rsplit("/", 1)[-1])
        return await continuation(details)


class FakeAgent(pb_grpc.HostAgentServicer):  # type: ignore[misc]
    """Answers DeleteSnapshot with `fail` (None: success) and records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.deleted: list[str] = []
        self.fail: grpc.StatusCode | None = None
        self.port = free_port()
        self.server = grpc.aio.server(interceptors=[_Recorder(self.calls)])
        pb_grpc.add_HostAgentServicer_to_server(self, self.server)  # type: ignore[no-untyped-call]
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def DeleteSnapshot(self, request: pb.DeleteSnapshotRequest, context: Any) -> pb.Empty:
        self.deleted.append(request.name)
        if self.fail is not None:
            await context.abort(self.fail, "this host says no")
        return pb.Empty()

    async def CreateSandbox(self, request: pb.CreateSandboxRequest, context: Any) -> pb.Sandbox:
        return pb.Sandbox(sandbox_id=request.sandbox_id, status=pb.SANDBOX_STATUS_RUNNING)

    async def CreateSnapshot(self, request: pb.CreateSnapshotRequest, context: Any) -> Any:
        return pb.Template(name=request.name, type=pb.TEMPLATE_TYPE_SNAPSHOT, size_bytes=1)


@pytest.fixture
async def agents() -> AsyncIterator[Callable[[], FakeAgent]]:
    started: list[FakeAgent] = []

    def start() -> FakeAgent:
        agent = FakeAgent()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        await agent.server.stop(None)


@pytest.fixture
async def use_pool(app: FastAPI) -> AsyncIterator[Callable[[TenantAddressPolicy], None]]:
    """Make the app reach hosts through a real client pool with this tenant address policy."""
    pools: list[HostClientPool] = []

    def use(policy: TenantAddressPolicy) -> None:
        pools.append(HostClientPool(lambda _host_id: "agent-secret", tenant_policy=policy))
        app.state.hosts = Hosts(pools[-1], BalancedScheduler())

    yield use
    for pool in pools:
        await pool.close()


async def _add(db: Database, *rows: Any) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add_all(rows)


async def _templates(db: Database) -> set[str]:
    async with db.sessionmaker() as session:
        return set(await session.scalars(select(Template.name)))


async def _host(db: Database, agent: FakeAgent, team: str | None = None, **kw: Any) -> Host:
    host = Host(
        id=uuid.uuid4(),
        type="byoc" if team else "regular",
        team_id=ids.TEAM.parse(team) if team else None,
        address=agent.address,
        status=kw.pop("status", "online"),
        memory_mb=16384,
        **kw,
    )
    await _add(db, host)
    return host


async def _byoc_team(client: httpx.AsyncClient, root: str) -> dict[str, Any]:
    owner = await signup(client, name="Bob")
    resp = await client.put(
        f"/v1/admin/teams/{owner['team_id']}/byoc", json={"enabled": True}, headers=bearer(root)
    )
    assert resp.status_code == 204, resp.text
    return owner


async def test_a_templates_deletion_reaches_only_the_hosts_holding_it(
    client: httpx.AsyncClient,
    db: Database,
    use_pool: Callable[[TenantAddressPolicy], None],
    agents: Callable[[], FakeAgent],
) -> None:
    root = (await signup(client, name="Root"))["token"]  # the first account: an admin
    alice = await signup(client, name="Alice")
    bob = await _byoc_team(client, root)
    shared_agent, bob_agent = agents(), agents()
    for agent in (shared_agent, bob_agent):
        await agent.server.start()
    shared = await _host(db, shared_agent)
    bobs = await _host(db, bob_agent, bob["team_id"])
    # Bob's host would refuse (and so block) any deletion it heard of.
    bob_agent.fail = grpc.StatusCode.INTERNAL
    alice_team, bob_team = ids.TEAM.parse(alice["team_id"]), ids.TEAM.parse(bob["team_id"])
    await _add(
        db,
        Template(name="alice-snap", team_id=alice_team, type="snapshot", host_id=shared.id),
        # From before templates recorded their host: the hosts her capsules could have used.
        Template(name="alice-old", team_id=alice_team, type="snapshot"),
        Template(name="platform-image", team_id=ids.PLATFORM_TEAM_ID, type="base"),
        Template(name="bob-snap", team_id=bob_team, type="snapshot", host_id=bobs.id),
    )
    use_pool(LAB)
    for name in ("alice-snap", "alice-old"):
        resp = await client.delete(f"/v1/snapshots/{name}", headers=bearer(alice["token"]))
        assert resp.status_code == 204, resp.text
    resp = await client.delete("/v1/admin/templates/platform-image", headers=bearer(root))
    assert resp.status_code == 204, resp.text

    # Bob's host never heard of Alice's templates or the platform's, by any call.
    assert bob_agent.calls == []
    assert shared_agent.deleted == ["alice-snap", "alice-old", "platform-image"]

    # Bob's own template lives on his host only; its refusal holds up his delete alone.
    resp = await client.delete("/v1/snapshots/bob-snap", headers=bearer(bob["token"]))
    assert_error(resp, 502, "agent_error")
    assert await _templates(db) == {"bob-snap"}
    bob_agent.fail = None
    resp = await client.delete("/v1/snapshots/bob-snap", headers=bearer(bob["token"]))
    assert resp.status_code == 204, resp.text
    assert bob_agent.deleted == ["bob-snap", "bob-snap"]
    assert shared_agent.deleted == ["alice-snap", "alice-old", "platform-image"]
    assert await _templates(db) == set()


async def test_a_template_whose_host_is_down_is_kept_until_it_is_back(
    client: httpx.AsyncClient,
    db: Database,
    use_pool: Callable[[TenantAddressPolicy], None],
    agents: Callable[[], FakeAgent],
) -> None:
    alice = await signup(client, name="Alice")
    holder, other = agents(), agents()
    for agent in (holder, other):
        await agent.server.start()
    host = await _host(db, holder, status="unreachable")
    await _host(db, other)
    await _add(
        db,
        Template(
            name="alice-snap",
            team_id=ids.TEAM.parse(alice["team_id"]),
            type="snapshot",
            host_id=host.id,
        ),
    )
    use_pool(LAB)
    resp = await client.delete("/v1/snapshots/alice-snap", headers=bearer(alice["token"]))
    assert_error(resp, 503, "host_unavailable")
    # Not asked anywhere else instead (that would lose the files on the real holder).
    assert (holder.calls, other.calls) == ([], [])
    assert await _templates(db) == {"alice-snap"}


async def test_a_byoc_address_is_checked_again_when_dialled(
    client: httpx.AsyncClient,
    db: Database,
    use_pool: Callable[[TenantAddressPolicy], None],
    agents: Callable[[], FakeAgent],
) -> None:
    """A BYOC host whose stored address points at the control plane's own machine (written
    before the rule, or a name that now resolves there) is not dialled: its capsule cannot be
    created, and nothing reaches the address."""
    root = (await signup(client, name="Root"))["token"]
    bob = await _byoc_team(client, root)
    local = agents()
    await local.server.start()
    await _host(db, local, bob["team_id"])
    await _add(db, Template(name="minimal", team_id=ids.PLATFORM_TEAM_ID, type="base"))
    use_pool(TenantAddressPolicy())
    resp = await client.post("/v1/capsules", json={}, headers=bearer(bob["token"]))
    assert resp.status_code in (502, 503), resp.text
    assert local.calls == []
    async with db.sessionmaker() as session:
        assert list(await session.scalars(select(Sandbox))) == []  # nothing half-made
    # The same host, where the operator allows loopback for a lab, is dialled.
    use_pool(LAB)
    resp = await client.post("/v1/capsules", json={}, headers=bearer(bob["token"]))
    assert resp.status_code == 201, resp.text
    assert local.calls == ["CreateSandbox"]


async def test_an_overwritten_template_leaves_no_files_on_its_old_host(
    client: httpx.AsyncClient,
    db: Database,
    use_pool: Callable[[TenantAddressPolicy], None],
    agents: Callable[[], FakeAgent],
) -> None:
    """Snapshotting over a template of the same name from a capsule on another host moves the
    template there; the host that held it is told to delete its copy, and no other host hears
    of it."""
    alice = await signup(client, name="Alice")
    old, new, bystander = agents(), agents(), agents()
    for agent in (old, new, bystander):
        await agent.server.start()
    old_host, new_host = await _host(db, old), await _host(db, new)
    await _host(db, bystander)
    team = ids.TEAM.parse(alice["team_id"])
    capsule = Sandbox(
        id=uuid.uuid4(),
        team_id=team,
        host_id=new_host.id,
        template="minimal",
        status="running",
        vcpus=1,
        memory_mb=512,
    )
    await _add(
        db,
        Template(name="alice-snap", team_id=team, type="snapshot", host_id=old_host.id),
        capsule,
    )
    use_pool(LAB)
    resp = await client.post(
        "/v1/snapshots",
        params={"overwrite": "true"},
        json={"sandbox_id": ids.SANDBOX.format(capsule.id), "name": "alice-snap"},
        headers=bearer(alice["token"]),
    )
    assert resp.status_code == 201, resp.text
    assert (new.calls, old.calls, bystander.calls) == (["CreateSnapshot"], ["DeleteSnapshot"], [])
    assert old.deleted == ["alice-snap"]
    async with db.sessionmaker() as session:
        row = await session.scalar(select(Template).where(Template.name == "alice-snap"))
        assert row is not None and row.host_id == new_host.id
