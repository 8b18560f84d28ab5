"""The host agent's side of registration (hostagent/controlplane_link.py) against the real
control plane app: registering with the one-time token, keeping the credentials, heartbeats,
refreshing an expired host JWT, and pausing every capsule when the control plane refuses the
host or stops answering. Only the capsule manager's pause_all is a stand-in (it records calls)."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models.hosts import Host, HostRefreshToken
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.security import TokenCodec
from wrenn_server.hostagent import tls
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.controlplane_link import (
    ControlPlaneLink,
    Credentials,
    RegistrationError,
)

from ..waiting import wait_for
from .conftest import TEST_JWT_SECRET
from .helpers import bearer, signup

CP_URL = "http://wrenn.test"


class Recorder:
    def __init__(self) -> None:
        self.pauses = 0
        self.secrets: list[str] = []

    async def pause_all(self) -> None:
        self.pauses += 1

    def on_secret(self, secret: str) -> None:
        self.secrets.append(secret)


async def _new_host_token(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    admin = await signup(client)  # the installation's first account: a platform admin
    resp = await client.post("/v1/hosts", json={"type": "regular"}, headers=bearer(admin["token"]))
    assert resp.status_code == 201, resp.text
    return admin, resp.json()["registration_token"]


def _link(
    app: FastAPI,
    data_dir: Path,
    recorder: Recorder,
    *,
    token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> ControlPlaneLink:
    settings = AgentSettings(
        data_dir=data_dir,
        control_plane_url=CP_URL,
        registration_token=token,  # type: ignore[arg-type]
        **{"listen": "127.0.0.1:50999", **overrides},
    )
    return ControlPlaneLink(
        settings,
        pause_all=recorder.pause_all,
        on_secret=recorder.on_secret,
        transport=transport or httpx.ASGITransport(app=app),
    )


async def _host(db: Database, host_id: str) -> Host | None:
    async with db.sessionmaker() as session:
        return await session.get(Host, ids.HOST.parse(host_id))


async def test_registers_once_and_keeps_its_credentials(
    app: FastAPI, client: httpx.AsyncClient, db: Database, tmp_path: Path
) -> None:
    _admin, token = await _new_host_token(client)
    recorder = Recorder()
    link = _link(app, tmp_path, recorder, token=token)
    creds = await link.ensure_registered()
    await link.close()

    host = await _host(db, creds.host_id)
    assert host is not None and host.status == "online"
    assert host.address == "127.0.0.1:50999"
    assert host.cpu_cores and host.cpu_cores >= 1 and host.memory_mb and host.memory_mb > 0
    codec = TokenCodec(TEST_JWT_SECRET, dt.timedelta(hours=1))
    assert recorder.secrets == [codec.agent_secret(ids.HOST.parse(creds.host_id))]
    path = tmp_path / "host-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Credentials.load(path) == creds
    # Its TLS identity: the key private to root, the certificate the one the control plane pinned.
    assert link.tls is not None and link.tls == tls.load(tmp_path)
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "tls" / "agent.key").stat().st_mode) == 0o600
    assert host.tls_certificate == link.tls.cert_pem.decode()

    # A restart uses the saved credentials and identity: the spent token is not needed (nor
    # accepted).
    again = _link(app, tmp_path, Recorder(), token=None)
    assert await again.ensure_registered() == creds
    assert again.tls == link.tls
    await again.close()

    # Without the pinned identity the saved credentials are useless: said at start-up.
    (tmp_path / "tls" / "agent.key").unlink()
    lost = _link(app, tmp_path, Recorder(), token=None)
    with pytest.raises(RegistrationError, match="register again"):
        await lost.ensure_registered()
    await lost.close()


async def test_an_agent_on_a_unix_socket_registers_without_tls(
    app: FastAPI, client: httpx.AsyncClient, db: Database, tmp_path: Path
) -> None:
    _admin, token = await _new_host_token(client)
    link = _link(app, tmp_path, Recorder(), token=token, listen=f"unix:{tmp_path}/agent.sock")
    creds = await link.ensure_registered()
    await link.close()
    host = await _host(db, creds.host_id)
    assert host is not None and host.tls_certificate is None and link.tls is None
    assert not (tmp_path / "tls").exists()


async def test_registration_errors_are_clear(
    app: FastAPI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await _new_host_token(client)
    without = _link(app, tmp_path / "a", Recorder())
    with pytest.raises(RegistrationError, match="REGISTRATION_TOKEN"):
        await without.ensure_registered()
    await without.close()

    (tmp_path / "b").mkdir()
    refused = _link(app, tmp_path / "b", Recorder(), token="wrh_" + "0" * 64)
    with pytest.raises(RegistrationError, match="401"):
        await refused.ensure_registered()
    await refused.close()
    assert not (tmp_path / "b" / "host-credentials.json").exists()


async def test_heartbeat_refreshes_an_expired_token(
    app: FastAPI, client: httpx.AsyncClient, db: Database, tmp_path: Path
) -> None:
    _admin, token = await _new_host_token(client)
    recorder = Recorder()
    link = _link(app, tmp_path, recorder, token=token)
    creds = await link.ensure_registered()
    host_id = ids.HOST.parse(creds.host_id)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    async with db.sessionmaker() as session, transaction(session, write=True):
        await session.execute(
            update(Host).where(Host.id == host_id).values(last_heartbeat_at=long_ago)
        )

    codec = TokenCodec(TEST_JWT_SECRET, dt.timedelta(hours=1))
    expired = codec.issue_host(host_id, dt.timedelta(seconds=-1))
    assert link.credentials is not None
    link.credentials.token = expired
    await link.beat()

    assert recorder.pauses == 0
    assert link.credentials.token != expired
    assert link.credentials.refresh_token != creds.refresh_token
    assert Credentials.load(tmp_path / "host-credentials.json") == link.credentials
    host = await _host(db, creds.host_id)
    assert host is not None and host.last_heartbeat_at is not None
    assert host.last_heartbeat_at > long_ago
    async with db.sessionmaker() as session:
        revoked = await session.scalars(
            select(HostRefreshToken.revoked_at).where(HostRefreshToken.host_id == host_id)
        )
        assert sorted(r is None for r in revoked) == [False, True]  # old revoked, new live
    await link.close()


async def test_a_deleted_host_pauses_its_capsules_once(
    app: FastAPI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    admin, token = await _new_host_token(client)
    recorder = Recorder()
    link = _link(app, tmp_path, recorder, token=token)
    creds = await link.ensure_registered()
    await link.beat()
    assert recorder.pauses == 0

    resp = await client.delete(f"/v1/hosts/{creds.host_id}", headers=bearer(admin["token"]))
    assert resp.status_code == 204, resp.text
    await link.beat()
    assert recorder.pauses == 1
    await link.beat()
    assert recorder.pauses == 1  # once per loss, not once per beat
    await link.close()


async def test_a_lost_control_plane_pauses_capsules_after_the_grace_period(
    app: FastAPI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    _admin, token = await _new_host_token(client)
    registering = _link(app, tmp_path, Recorder(), token=token)
    await registering.ensure_registered()
    await registering.close()

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    recorder = Recorder()
    link = _link(
        app,
        tmp_path,
        recorder,
        transport=httpx.MockTransport(unreachable),
        pause_after_cp_lost_sec=0.2,
    )
    await link.ensure_registered()
    await link.beat()
    assert recorder.pauses == 0  # within the grace period

    async def paused() -> bool:
        await link.beat()
        return recorder.pauses > 0

    await wait_for(paused, 5, what="capsules paused after the grace period")
    await link.beat()
    assert recorder.pauses == 1  # once per loss, not once per failed beat
    await link.close()
