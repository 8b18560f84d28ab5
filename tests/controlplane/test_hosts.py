"""Hosts: creation and registration tokens, who sees and manages which host, the agent's
registration, heartbeat and refresh, tags, deletion, the host monitor and the audit events.

No host agent runs: registered hosts get addresses nothing answers on (a closed local port), and
the monitor is driven by calling its service with a database session."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from wrenn_server.agentproto.tls import fingerprint
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.agents.pool import HostClientPool
from wrenn_server.controlplane.db.models import AuditLog, Sandbox
from wrenn_server.controlplane.db.models.hosts import Host, HostToken
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.db.types import utcnow
from wrenn_server.controlplane.jobs.reconciler import Reconciler
from wrenn_server.controlplane.security import TokenCodec
from wrenn_server.controlplane.services import host_liveness
from wrenn_server.hostagent import tls
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .helpers import assert_error, bearer, signup
from .team_helpers import add_member, create_team, login, switch

# A closed port: the agent of a host registered here can never be reached.
NOWHERE = "127.0.0.1:1"
# BYOC hosts may not give a loopback address; no test dials this one (TEST-NET-1, RFC 5737).
BYOC_ADDRESS = "192.0.2.10:7000"
DOWN_AFTER = dt.timedelta(seconds=90)
CERTIFICATE = tls.generate().cert_pem.decode()


@dataclass(frozen=True)
class World:
    """Tokens of: the platform admin (`root`), team Olive's owner, admin and member (acting in
    Olive, which has BYOC enabled), and the owner of another team with BYOC too (`outsider`)."""

    root: str
    owner: str
    admin: str
    member: str
    outsider: str
    team: str
    other_team: str


async def _set_byoc(client: httpx.AsyncClient, root: str, team: str) -> None:
    resp = await client.put(
        f"/v1/admin/teams/{team}/byoc", json={"enabled": True}, headers=bearer(root)
    )
    assert resp.status_code == 204, resp.text


async def _world(client: httpx.AsyncClient, *, byoc: bool = True) -> World:
    root = await signup(client, email="root@example.com", name="Root")  # the first: an admin
    owner = await signup(client, email="owner@example.com", name="Olive Owner")
    await signup(client, email="admin@example.com")
    await signup(client, email="member@example.com")
    outsider = await signup(client, email="outsider@example.com")
    team = (await create_team(client, owner["token"], "Olive"))["id"]
    owner_token = await switch(client, owner["token"], team)
    await add_member(client, owner_token, team, "admin@example.com", role="admin")
    await add_member(client, owner_token, team, "member@example.com")
    admin = await switch(client, (await login(client, "admin@example.com"))["token"], team)
    member = await switch(client, (await login(client, "member@example.com"))["token"], team)
    if byoc:
        await _set_byoc(client, root["token"], team)
        await _set_byoc(client, root["token"], outsider["team_id"])
    return World(
        root["token"], owner_token, admin, member, outsider["token"], team, outsider["team_id"]
    )


async def _create(client: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    return await client.post("/v1/hosts", json=body, headers=bearer(token))


async def _new_host(client: httpx.AsyncClient, token: str, **body: Any) -> dict[str, Any]:
    """A pending host: {"host": ..., "registration_token": ...}."""
    resp = await _create(client, token, **({"type": "regular"} | body))
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def _register(
    client: httpx.AsyncClient, token: str, address: str = NOWHERE, **specs: Any
) -> httpx.Response:
    body = {"token": token, "address": address, **specs}
    if not address.startswith("unix:"):
        body.setdefault("tls_certificate", CERTIFICATE)
    return await client.post("/v1/hosts/register", json=body)


async def _registered(
    client: httpx.AsyncClient, creator: str, address: str = NOWHERE, **body: Any
) -> dict[str, Any]:
    """A host created by `creator` and registered at `address`: its credentials."""
    created = await _new_host(client, creator, **body)
    resp = await _register(client, created["registration_token"], address)
    assert resp.status_code == 201, resp.text
    credentials: dict[str, Any] = resp.json()
    return credentials


async def _heartbeat(client: httpx.AsyncClient, host_id: str, token: str) -> httpx.Response:
    return await client.post(f"/v1/hosts/{host_id}/heartbeat", headers={"X-Host-Token": token})


async def _refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post("/v1/hosts/auth/refresh", json={"refresh_token": refresh_token})


async def _host_row(db: Database, host_id: str) -> Host | None:
    async with db.sessionmaker() as session, transaction(session):
        return await session.get(Host, ids.HOST.parse(host_id))


async def _set_heartbeat(db: Database, host_id: str, when: dt.datetime) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(Host).where(Host.id == ids.HOST.parse(host_id)).values(last_heartbeat_at=when)
        )


async def _capsule(db: Database, team: str, host_id: str, status: str = "running") -> str:
    """A capsule row of `team` placed on the host; its wire id."""
    sandbox = Sandbox(
        id=ids.new_id(),
        team_id=ids.TEAM.parse(team),
        host_id=ids.HOST.parse(host_id),
        template="minimal",
        status=status,
        vcpus=1,
        memory_mb=256,
    )
    async with db.sessionmaker() as session, transaction(session, write=True):
        session.add(sandbox)
    return ids.SANDBOX.format(sandbox.id)


async def _capsule_row(db: Database, wire_id: str) -> Sandbox:
    async with db.sessionmaker() as session, transaction(session):
        sandbox = await session.get(Sandbox, ids.SANDBOX.parse(wire_id))
        assert sandbox is not None
        return sandbox


async def _mark_stale_down(db: Database) -> list[str]:
    """One pass of the host monitor; the wire ids of the hosts it marked unreachable."""
    async with db.sessionmaker() as session, transaction(session, write=True):
        stale = await host_liveness.mark_stale_down(session, down_after=DOWN_AFTER)
        return [ids.HOST.format(host.id) for host in stale]


async def _host_events(db: Database, host_id: str) -> list[AuditLog]:
    async with db.sessionmaker() as session, transaction(session):
        rows = await session.scalars(
            select(AuditLog)
            .where(AuditLog.resource_type == "host", AuditLog.resource_id == host_id)
            .order_by(AuditLog.created_at, AuditLog.id)
        )
        return list(rows)


# Creation --------------------------------------------------------------------------------------


async def test_platform_admins_create_shared_hosts(client: httpx.AsyncClient, db: Database) -> None:
    w = await _world(client, byoc=False)
    resp = await _create(
        client, w.root, type="regular", provider="hetzner", availability_zone="fsn"
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["registration_token"].startswith("wrh_")
    assert len(body["registration_token"]) > 40
    host = body["host"]
    assert (host["type"], host["status"], host["team_id"], host["team_name"]) == (
        "regular",
        "pending",
        None,
        None,
    )
    assert (host["provider"], host["availability_zone"]) == ("hetzner", "fsn")
    assert host["address"] is None and host["last_heartbeat_at"] is None
    assert host["tags"] == []
    ids.HOST.parse(host["id"])
    [event] = await _host_events(db, host["id"])
    assert (event.action, event.scope, event.team_id, event.actor_type) == (
        "add",
        "admin",
        None,
        "user",
    )

    for token in (w.owner, w.admin, w.member, w.outsider):
        assert_error(await _create(client, token, type="regular"), 403, "forbidden")
    resp = await _create(client, w.root, type="regular", team_id=w.team)
    assert_error(resp, 400, "invalid_request")
    assert_error(await _create(client, w.root, type="other"), 400, "invalid_request")


async def test_byoc_hosts_need_a_byoc_team_and_its_owner_or_admin(
    client: httpx.AsyncClient,
) -> None:
    w = await _world(client, byoc=False)
    assert_error(await _create(client, w.root, type="byoc"), 400, "invalid_request")
    assert_error(await _create(client, w.owner, type="byoc"), 400, "invalid_request")
    # BYOC is off for Olive: refused to everyone, platform admins included.
    for token in (w.owner, w.root):
        resp = await _create(client, token, type="byoc", team_id=w.team)
        assert_error(resp, 403, "forbidden")

    await _set_byoc(client, w.root, w.team)
    await _set_byoc(client, w.root, w.other_team)
    for token in (w.owner, w.admin, w.root):
        created = await _new_host(client, token, type="byoc", team_id=w.team)
        assert created["registration_token"].startswith("wrh_")
        host = created["host"]
        assert (host["type"], host["team_id"], host["team_name"], host["status"]) == (
            "byoc",
            w.team,
            "Olive",
            "pending",
        )
    resp = await _create(client, w.member, type="byoc", team_id=w.team)
    assert_error(resp, 403, "forbidden")
    # Another team's hosts: not a member there, so the team does not exist for the caller.
    assert_error(
        await _create(client, w.owner, type="byoc", team_id=w.other_team), 404, "not_found"
    )
    assert_error(await _create(client, w.outsider, type="byoc", team_id=w.team), 404, "not_found")
    missing = ids.TEAM.format(uuid.uuid4())
    assert_error(await _create(client, w.root, type="byoc", team_id=missing), 404, "not_found")


# Visibility ------------------------------------------------------------------------------------


async def test_who_sees_which_host(client: httpx.AsyncClient) -> None:
    w = await _world(client)
    shared = (await _new_host(client, w.root))["host"]["id"]
    olive = (await _new_host(client, w.owner, type="byoc", team_id=w.team))["host"]["id"]
    other = (await _new_host(client, w.outsider, type="byoc", team_id=w.other_team))["host"]["id"]

    async def listed(token: str) -> dict[str, Any]:
        resp = await client.get("/v1/hosts", headers=bearer(token))
        assert resp.status_code == 200, resp.text
        return {h["id"]: h for h in resp.json()}

    everything = await listed(w.root)
    assert set(everything) == {shared, olive, other}
    assert everything[olive]["team_name"] == "Olive"
    assert everything[other]["team_name"] is not None
    assert everything[shared]["team_name"] is None
    for token in (w.owner, w.admin, w.member):
        assert set(await listed(token)) == {olive}
    assert set(await listed(w.outsider)) == {other}

    async def get(token: str, host_id: str) -> httpx.Response:
        return await client.get(f"/v1/hosts/{host_id}", headers=bearer(token))

    for host_id in (shared, olive, other):
        resp = await get(w.root, host_id)
        assert resp.status_code == 200 and resp.json()["id"] == host_id
    resp = await get(w.member, olive)
    assert resp.status_code == 200 and resp.json()["team_name"] == "Olive"
    for host_id in (shared, other):
        assert_error(await get(w.member, host_id), 404, "not_found")
    assert_error(await get(w.outsider, olive), 404, "not_found")
    assert_error(await get(w.root, ids.HOST.format(uuid.uuid4())), 404, "not_found")
    assert_error(await get(w.root, "not-a-host-id"), 404, "not_found")


# Registration ----------------------------------------------------------------------------------


async def test_register_once_with_the_token(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    w = await _world(client, byoc=False)
    created = await _new_host(client, w.root)
    host_id = created["host"]["id"]
    specs = {"arch": "x86_64", "cpu_cores": 16, "memory_mb": 65536, "disk_gb": 500}
    resp = await _register(client, created["registration_token"], "10.1.2.3:7000", **specs)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"host", "token", "refresh_token", "agent_secret"}
    host = body["host"]
    assert (host["id"], host["status"], host["address"]) == (host_id, "online", "10.1.2.3:7000")
    assert {k: host[k] for k in specs} == specs
    assert host["last_heartbeat_at"] is not None
    assert host["tls_fingerprint"] == fingerprint(CERTIFICATE)
    assert len(host["tls_fingerprint"].split(":")) == 32
    assert body["refresh_token"].startswith("wrr_")
    codec: TokenCodec = app.state.codec
    assert codec.verify_host(body["token"]) == ids.HOST.parse(host_id)
    assert body["agent_secret"] == codec.agent_secret(ids.HOST.parse(host_id))
    listed = await client.get(f"/v1/hosts/{host_id}", headers=bearer(w.root))
    assert listed.json()["status"] == "online"
    register_event = (await _host_events(db, host_id))[-1]
    assert (register_event.action, register_event.status, register_event.actor_type) == (
        "register",
        "info",
        "system",
    )

    # One-time: the same token again, or for another address, is refused.
    resp = await _register(client, created["registration_token"], "10.9.9.9:7000")
    assert_error(resp, 401, "unauthorized")
    row = await _host_row(db, host_id)
    assert row is not None and (row.address, row.tls_certificate) == ("10.1.2.3:7000", CERTIFICATE)
    assert_error(await _register(client, "wrh_" + "0" * 64), 401, "unauthorized")


@pytest.mark.parametrize(
    "certificate",
    [
        None,
        "",
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        CERTIFICATE + CERTIFICATE,  # which one would be pinned?
        tls.generate().key_pem.decode(),  # a key where the certificate goes
    ],
)
async def test_a_network_agent_must_send_its_certificate(
    client: httpx.AsyncClient, db: Database, certificate: str | None
) -> None:
    w = await _world(client, byoc=False)
    created = await _new_host(client, w.root)
    resp = await _register(
        client, created["registration_token"], "10.1.2.3:7000", tls_certificate=certificate
    )
    assert_error(resp, 400, "invalid_request")
    row = await _host_row(db, created["host"]["id"])
    assert row is not None and (row.status, row.address, row.tls_certificate) == (
        "pending",
        None,
        None,
    )
    # Refused, the token was not spent.
    resp = await _register(client, created["registration_token"], "10.1.2.3:7000")
    assert resp.status_code == 201, resp.text


async def test_an_agent_on_a_unix_socket_needs_no_certificate(
    client: httpx.AsyncClient, db: Database
) -> None:
    w = await _world(client, byoc=False)
    created = await _new_host(client, w.root)
    resp = await _register(client, created["registration_token"], "unix:///run/wrenn/a.sock")
    assert resp.status_code == 201, resp.text
    row = await _host_row(db, created["host"]["id"])
    assert row is not None and row.tls_certificate is None
    assert resp.json()["host"]["tls_fingerprint"] is None


async def test_expired_registration_token(client: httpx.AsyncClient, db: Database) -> None:
    w = await _world(client, byoc=False)
    created = await _new_host(client, w.root)
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(HostToken)
            .where(HostToken.host_id == ids.HOST.parse(created["host"]["id"]))
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    assert_error(await _register(client, created["registration_token"]), 401, "unauthorized")
    row = await _host_row(db, created["host"]["id"])
    assert row is not None and row.status == "pending"


@pytest.mark.parametrize(
    "address",
    [
        "",
        "10.0.0.1",
        "no port:80",
        "http://10.0.0.1:80",
        "a:b",
        "10.0.0.1:123456",
        # gRPC would take these for its own schemes (an abstract socket, a raw target).
        "unix-abstract:1234",
        "ipv4:127.0.0.1:80",
        "[::1]7000",
        "1.2.3.4.5:80",
        # No agent lives at a cloud metadata service, on anyone's host.
        "169.254.169.254:80",
        "metadata.google.internal:80",
    ],
)
async def test_register_refuses_a_bad_address(client: httpx.AsyncClient, address: str) -> None:
    w = await _world(client, byoc=False)
    created = await _new_host(client, w.root)
    resp = await _register(client, created["registration_token"], address)
    assert_error(resp, 400, "invalid_request")
    # The token was not spent.
    assert (await _register(client, created["registration_token"])).status_code == 201


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:7000",
        "127.8.9.10:7000",
        "localhost:7000",
        "agent.localhost:7000",
        "[::1]:7000",
        "169.254.169.254:80",
        "0.0.0.0:7000",
        "224.0.0.1:7000",
        "unix:///run/wrenn/agent.sock",
        # Other spellings of the same addresses, each of which got past the first check.
        "[::ffff:127.0.0.1]:7000",
        "[::ffff:7f00:1]:7000",
        "127.1:7000",
        "2130706433:7000",
        "0x7f.1:7000",
        "0177.0.0.1:7000",
        "localhost.:7000",
        "[::ffff:169.254.169.254]:80",
        "2852039166:80",
        "[fd00:ec2::254]:80",
        "metadata.google.internal:80",
        "[fe80::1]:7000",
        "[::]:7000",
        "unix-abstract:1234",
        "unix:/run/wrenn/agent.sock",
    ],
)
async def test_byoc_hosts_may_not_point_the_control_plane_at_itself(
    client: httpx.AsyncClient, db: Database, address: str
) -> None:
    w = await _world(client)
    created = await _new_host(client, w.owner, type="byoc", team_id=w.team)
    resp = await _register(client, created["registration_token"], address)
    error = assert_error(resp, 400, "invalid_request")
    assert "address" in error["message"] or "host" in error["message"], error
    row = await _host_row(db, created["host"]["id"])
    assert row is not None and (row.status, row.address) == ("pending", None)
    # Refused, the token was not spent.
    resp = await _register(client, created["registration_token"], BYOC_ADDRESS)
    assert resp.status_code == 201, resp.text


async def test_addresses_are_stored_in_their_canonical_form(
    client: httpx.AsyncClient, db: Database
) -> None:
    """What the control plane dials is what was checked: one spelling per address. Shared
    hosts (the platform's own) may use loopback and unix sockets; a team's may not."""
    w = await _world(client)
    cases = [
        (w.owner, {"type": "byoc", "team_id": w.team}, "[::ffff:203.0.113.9]:7000"),
        (w.owner, {"type": "byoc", "team_id": w.team}, "3405803786:7000"),
        (w.root, {}, "127.1:7000"),
        (w.root, {}, "unix:///run/wrenn/agent.sock"),
    ]
    stored = []
    for creator, body, address in cases:
        created = await _new_host(client, creator, **body)
        resp = await _register(client, created["registration_token"], address)
        assert resp.status_code == 201, resp.text
        stored.append(resp.json()["host"]["address"])
    assert stored == [
        "203.0.113.9:7000",
        "203.0.113.10:7000",
        "127.0.0.1:7000",
        "unix:/run/wrenn/agent.sock",
    ]


async def test_new_registration_token_only_before_registering(client: httpx.AsyncClient) -> None:
    w = await _world(client)
    created = await _new_host(client, w.owner, type="byoc", team_id=w.team)
    host_id = created["host"]["id"]
    resp = await client.post(f"/v1/hosts/{host_id}/token", headers=bearer(w.admin))
    assert resp.status_code == 201, resp.text
    new = resp.json()["registration_token"]
    assert new.startswith("wrh_") and new != created["registration_token"]
    assert resp.json()["host"]["id"] == host_id
    assert_error(await _register(client, created["registration_token"]), 401, "unauthorized")
    assert (await _register(client, new, BYOC_ADDRESS)).status_code == 201

    resp = await client.post(f"/v1/hosts/{host_id}/token", headers=bearer(w.owner))
    assert_error(resp, 409, "invalid_state")


# Heartbeat and refresh -------------------------------------------------------------------------


async def test_heartbeat(app: FastAPI, client: httpx.AsyncClient, db: Database) -> None:
    w = await _world(client, byoc=False)
    first = await _registered(client, w.root)
    second = await _registered(client, w.root)
    host_id, token = first["host"]["id"], first["token"]

    long_ago = utcnow() - dt.timedelta(minutes=1)
    await _set_heartbeat(db, host_id, long_ago)
    resp = await _heartbeat(client, host_id, token)
    assert resp.status_code == 204, resp.text
    row = await _host_row(db, host_id)
    assert row is not None and row.last_heartbeat_at is not None
    assert row.last_heartbeat_at > long_ago + dt.timedelta(seconds=50)
    assert row.status == "online"

    path = f"/v1/hosts/{host_id}/heartbeat"
    assert_error(await client.post(path), 401, "unauthorized")
    assert_error(await _heartbeat(client, host_id, second["token"]), 403, "forbidden")
    assert_error(await _heartbeat(client, host_id, w.root), 401, "unauthorized")
    assert_error(await client.post(path, headers=bearer(token)), 401, "unauthorized")
    codec: TokenCodec = app.state.codec
    expired = codec.issue_host(
        ids.HOST.parse(host_id), dt.timedelta(hours=1), now=utcnow() - dt.timedelta(hours=2)
    )
    assert_error(await _heartbeat(client, host_id, expired), 401, "unauthorized")
    # A host token is not a user session.
    for route in ("/v1/hosts", f"/v1/hosts/{host_id}", "/v1/me", "/v1/capsules"):
        assert_error(await client.get(route, headers=bearer(token)), 401, "unauthorized")


async def test_refresh_rotates_the_refresh_token(client: httpx.AsyncClient) -> None:
    w = await _world(client, byoc=False)
    registered = await _registered(client, w.root)
    host_id = registered["host"]["id"]

    resp = await _refresh(client, registered["refresh_token"])
    assert resp.status_code == 200, resp.text
    fresh = resp.json()
    assert fresh["host"]["id"] == host_id
    assert fresh["refresh_token"].startswith("wrr_")
    assert fresh["refresh_token"] != registered["refresh_token"]
    assert fresh["agent_secret"] == registered["agent_secret"]
    assert (await _heartbeat(client, host_id, fresh["token"])).status_code == 204

    assert_error(await _refresh(client, registered["refresh_token"]), 401, "unauthorized")
    again = await _refresh(client, fresh["refresh_token"])
    assert again.status_code == 200, again.text
    assert_error(await _refresh(client, fresh["refresh_token"]), 401, "unauthorized")
    assert_error(await _refresh(client, "wrr_" + "0" * 64), 401, "unauthorized")


# Tags ------------------------------------------------------------------------------------------


async def test_tags(client: httpx.AsyncClient) -> None:
    w = await _world(client)
    host_id = (await _new_host(client, w.owner, type="byoc", team_id=w.team))["host"]["id"]
    tags_path = f"/v1/hosts/{host_id}/tags"

    async def add(tag: Any) -> httpx.Response:
        return await client.post(tags_path, json={"tag": tag}, headers=bearer(w.admin))

    async def listed(token: str = w.member) -> list[str]:
        resp = await client.get(tags_path, headers=bearer(token))
        assert resp.status_code == 200, resp.text
        tags: list[str] = resp.json()
        return tags

    for tag in ("gpu", "arch=arm64", "gpu", "eu-west.1"):
        assert (await add(tag)).status_code == 204
    assert await listed() == ["arch=arm64", "eu-west.1", "gpu"]
    host = (await client.get(f"/v1/hosts/{host_id}", headers=bearer(w.member))).json()
    assert host["tags"] == ["arch=arm64", "eu-west.1", "gpu"]
    [in_list] = (await client.get("/v1/hosts", headers=bearer(w.member))).json()
    assert in_list["tags"] == ["arch=arm64", "eu-west.1", "gpu"]

    resp = await client.delete(f"{tags_path}/gpu", headers=bearer(w.owner))
    assert resp.status_code == 204, resp.text
    assert await listed() == ["arch=arm64", "eu-west.1"]
    assert_error(await client.delete(f"{tags_path}/gpu", headers=bearer(w.owner)), 404, "not_found")
    for bad in ("", "-leading-dash", "has space", "x" * 65, "ünïcode", 7):
        assert_error(await add(bad), 400, "invalid_request")
    resp = await client.delete(f"{tags_path}/-bad", headers=bearer(w.owner))
    assert_error(resp, 400, "invalid_request")
    assert await listed() == ["arch=arm64", "eu-west.1"]


# Deletion --------------------------------------------------------------------------------------


async def test_delete_refuses_while_capsules_run_unless_forced(
    client: httpx.AsyncClient, db: Database
) -> None:
    w = await _world(client, byoc=False)
    registered = await _registered(client, w.root)
    host_id = registered["host"]["id"]
    running = await _capsule(db, w.team, host_id)
    await _capsule(db, w.team, host_id, status="stopped")  # not live: does not count

    resp = await client.delete(f"/v1/hosts/{host_id}", headers=bearer(w.root))
    error = assert_error(resp, 409, "has_active_sandboxes")
    assert error["sandbox_ids"] == [running]
    preview = await client.get(f"/v1/hosts/{host_id}/delete-preview", headers=bearer(w.root))
    assert preview.status_code == 200, preview.text
    assert preview.json()["sandbox_ids"] == [running]
    assert preview.json()["host"]["id"] == host_id
    assert await _host_row(db, host_id) is not None

    # The agent cannot be reached: the capsule is only marked stopped.
    resp = await client.delete(f"/v1/hosts/{host_id}?force=true", headers=bearer(w.root))
    assert resp.status_code == 204, resp.text
    assert await _host_row(db, host_id) is None
    capsule = await _capsule_row(db, running)
    assert (capsule.status, capsule.host_id) == ("stopped", None)
    assert_error(await client.get(f"/v1/hosts/{host_id}", headers=bearer(w.root)), 404, "not_found")
    # Its credentials died with it.
    assert_error(await _heartbeat(client, host_id, registered["token"]), 401, "unauthorized")
    assert_error(await _refresh(client, registered["refresh_token"]), 401, "unauthorized")

    delete_event = (await _host_events(db, host_id))[-1]
    assert delete_event.action == "delete" and delete_event.actor_type == "user"
    assert delete_event.metadata_["forced"] is True
    assert delete_event.metadata_["capsules_destroyed"] == 1


async def test_delete_a_host_without_capsules(client: httpx.AsyncClient, db: Database) -> None:
    w = await _world(client)
    pending = (await _new_host(client, w.owner, type="byoc", team_id=w.team))["host"]["id"]
    preview = await client.get(f"/v1/hosts/{pending}/delete-preview", headers=bearer(w.admin))
    assert preview.json()["sandbox_ids"] == []
    resp = await client.delete(f"/v1/hosts/{pending}", headers=bearer(w.member))
    assert_error(resp, 403, "forbidden")
    resp = await client.delete(f"/v1/hosts/{pending}", headers=bearer(w.outsider))
    assert_error(resp, 404, "not_found")
    assert (await client.delete(f"/v1/hosts/{pending}", headers=bearer(w.admin))).status_code == 204
    assert await _host_row(db, pending) is None
    resp = await client.delete(f"/v1/hosts/{pending}", headers=bearer(w.admin))
    assert_error(resp, 404, "not_found")


# The host monitor ------------------------------------------------------------------------------


async def test_a_silent_host_is_marked_down_and_comes_back_with_a_heartbeat(
    client: httpx.AsyncClient, db: Database
) -> None:
    w = await _world(client, byoc=False)
    silent = await _registered(client, w.root)
    alive = await _registered(client, w.root)
    silent_id = silent["host"]["id"]
    running = await _capsule(db, w.team, silent_id)
    paused = await _capsule(db, w.team, silent_id, status="paused")
    elsewhere = await _capsule(db, w.team, alive["host"]["id"])

    assert await _mark_stale_down(db) == []  # both were just registered
    await _set_heartbeat(db, silent_id, utcnow() - DOWN_AFTER - dt.timedelta(seconds=5))
    assert await _mark_stale_down(db) == [silent_id]
    assert await _mark_stale_down(db) == []  # idempotent

    row = await _host_row(db, silent_id)
    assert row is not None and row.status == "unreachable"
    assert (await _capsule_row(db, running)).status == "missing"
    assert (await _capsule_row(db, paused)).status == "missing"
    assert (await _capsule_row(db, elsewhere)).status == "running"
    alive_row = await _host_row(db, alive["host"]["id"])
    assert alive_row is not None and alive_row.status == "online"
    down = (await _host_events(db, silent_id))[-1]
    assert (down.action, down.status, down.scope, down.actor_type, down.team_id) == (
        "marked_down",
        "warning",
        "admin",
        "system",
        None,
    )
    assert down.metadata_["capsules_missing"] == 2

    assert (await _heartbeat(client, silent_id, silent["token"])).status_code == 204
    row = await _host_row(db, silent_id)
    assert row is not None and row.status == "online"
    up = (await _host_events(db, silent_id))[-1]
    assert (up.action, up.status, up.actor_type) == ("marked_up", "info", "system")
    # Seen again while online: nothing more is recorded.
    await _set_heartbeat(db, silent_id, utcnow() - dt.timedelta(seconds=30))
    assert (await _heartbeat(client, silent_id, silent["token"])).status_code == 204
    actions = [e.action for e in await _host_events(db, silent_id)]
    assert actions == ["add", "register", "marked_down", "marked_up"]


class _Agent:
    """A host agent's ListSandboxes: the capsules it reports, or unreachable (None)."""

    def __init__(self) -> None:
        self.running: list[str] | None = None

    async def list_sandboxes(
        self, request: pb.ListSandboxesRequest, *, timeout: float | None = None
    ) -> pb.ListSandboxesResponse:
        if self.running is None:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        sandboxes = [
            pb.Sandbox(sandbox_id=wire_id, status=pb.SANDBOX_STATUS_RUNNING)
            for wire_id in self.running
        ]
        return pb.ListSandboxesResponse(sandboxes=sandboxes)


class _Pool(HostClientPool):
    def __init__(self, agent: _Agent) -> None:
        super().__init__(lambda _host_id: "unused")
        self.agent = agent

    async def client(self, host: Host) -> Any:
        return self.agent


async def test_the_reconciler_runs_the_monitor_and_brings_answering_hosts_back(
    client: httpx.AsyncClient, db: Database
) -> None:
    w = await _world(client, byoc=False)
    registered = await _registered(client, w.root)
    host_id = registered["host"]["id"]
    capsule = await _capsule(db, w.team, host_id)
    agent = _Agent()
    reconciler = Reconciler(db, _Pool(agent), down_after=DOWN_AFTER.total_seconds())

    await reconciler.run_once()  # unreachable, but seen at registration: not down yet
    row = await _host_row(db, host_id)
    assert row is not None and row.status == "online"
    assert (await _capsule_row(db, capsule)).status == "missing"  # the reconciler's own rule

    await _set_heartbeat(db, host_id, utcnow() - DOWN_AFTER - dt.timedelta(seconds=5))
    await reconciler.run_once()
    row = await _host_row(db, host_id)
    assert row is not None and row.status == "unreachable"

    agent.running = [capsule]  # the agent answers again
    await reconciler.run_once()
    row = await _host_row(db, host_id)
    assert row is not None and row.status == "online"
    assert row.last_heartbeat_at is not None and row.last_heartbeat_at > utcnow() - DOWN_AFTER
    assert (await _capsule_row(db, capsule)).status == "running"
    actions = [e.action for e in await _host_events(db, host_id)]
    assert actions == ["add", "register", "marked_down", "marked_up"]


# Audit visibility ------------------------------------------------------------------------------


async def _host_lifecycle(
    client: httpx.AsyncClient, db: Database, creator: str, **body: Any
) -> str:
    """Create, register, lose and regain, then delete a host: its wire id."""
    address = BYOC_ADDRESS if body.get("type") == "byoc" else NOWHERE
    registered = await _registered(client, creator, address, **body)
    host_id: str = registered["host"]["id"]
    await _set_heartbeat(db, host_id, utcnow() - DOWN_AFTER - dt.timedelta(seconds=5))
    assert await _mark_stale_down(db) == [host_id]
    assert (await _heartbeat(client, host_id, registered["token"])).status_code == 204
    resp = await client.delete(f"/v1/hosts/{host_id}", headers=bearer(creator))
    assert resp.status_code == 204, resp.text
    return host_id


LIFECYCLE = ["delete", "marked_up", "marked_down", "register", "add"]  # newest first


async def _audited(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> list[tuple[str, str | None, str | None]]:
    """(action, resource_id, team_id) of the host events `path` lists, newest first."""
    resp = await client.get(path, params={"resource_type": "host"}, headers=headers)
    assert resp.status_code == 200, resp.text
    return [(e["action"], e["resource_id"], e["team_id"]) for e in resp.json()["items"]]


async def test_byoc_host_events_are_for_the_teams_owner_and_admins(
    client: httpx.AsyncClient, db: Database
) -> None:
    w = await _world(client)
    host_id = await _host_lifecycle(client, db, w.owner, type="byoc", team_id=w.team)
    expected = [(action, host_id, w.team) for action in LIFECYCLE]
    assert await _audited(client, "/v1/audit-logs", bearer(w.owner)) == expected
    assert await _audited(client, "/v1/audit-logs", bearer(w.admin)) == expected
    assert await _audited(client, "/v1/audit-logs", bearer(w.member)) == []  # admin scope
    assert await _audited(client, "/v1/audit-logs", bearer(w.outsider)) == []
    assert await _audited(client, "/v1/admin/audit-logs", bearer(w.root)) == []


async def test_shared_host_events_are_platform_wide(
    client: httpx.AsyncClient, db: Database
) -> None:
    w = await _world(client, byoc=False)
    host_id = await _host_lifecycle(client, db, w.root)
    expected = [(action, host_id, None) for action in LIFECYCLE]
    assert await _audited(client, "/v1/admin/audit-logs", bearer(w.root)) == expected
    assert await _audited(client, "/v1/audit-logs", bearer(w.root)) == []
    assert await _audited(client, "/v1/audit-logs", bearer(w.owner)) == []
    resp = await client.get(
        "/v1/admin/audit-logs", params={"action": "marked_down"}, headers=bearer(w.root)
    )
    assert [e["action"] for e in resp.json()["items"]] == ["marked_down"]

    for token in (w.owner, w.admin, w.member):
        resp = await client.get("/v1/admin/audit-logs", headers=bearer(token))
        assert_error(resp, 403, "forbidden")
    key = await client.post("/v1/api-keys", json={"name": "k"}, headers=bearer(w.root))
    assert key.status_code == 201, key.text
    resp = await client.get("/v1/admin/audit-logs", headers={"X-API-Key": key.json()["key"]})
    assert_error(resp, 401, "unauthorized")


async def test_heartbeat_authenticates_before_reading_the_url(client: httpx.AsyncClient) -> None:
    # A caller without valid host credentials gets 401 whatever the URL holds.
    resp = await client.post("/v1/hosts/not-an-id/heartbeat", headers={"X-Host-Token": "bogus"})
    assert_error(resp, 401, "unauthorized")


async def test_turning_byoc_off_stops_new_hosts_not_the_care_of_existing_ones(
    client: httpx.AsyncClient,
) -> None:
    w = await _world(client)
    host = (await _new_host(client, w.owner, type="byoc", team_id=w.team))["host"]
    resp = await client.put(
        f"/v1/admin/teams/{w.team}/byoc", json={"enabled": False}, headers=bearer(w.root)
    )
    assert resp.status_code == 204, resp.text
    refused = await _create(client, w.owner, type="byoc", team_id=w.team)
    assert_error(refused, 403, "forbidden")
    tagged = await client.post(
        f"/v1/hosts/{host['id']}/tags", json={"tag": "old"}, headers=bearer(w.owner)
    )
    assert tagged.status_code == 204, tagged.text
    deleted = await client.delete(f"/v1/hosts/{host['id']}", headers=bearer(w.admin))
    assert deleted.status_code == 204, deleted.text
