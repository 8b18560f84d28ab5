"""The agent's side of host registration: redeem the one-time token, keep the credentials, send
heartbeats, refresh the host JWT, and pause every capsule when the control plane is lost.

- First start: POST /v1/hosts/register with the token, this host's address and specs, and
  (when it listens on TCP) the certificate of its TLS identity, which the control plane pins. The
  answer (host id, JWT, refresh token, agent secret) is written to host-credentials.json (0600)
  before anything else happens, so a restart never needs the spent token again.
- Every `heartbeat_interval_sec`: POST /v1/hosts/{id}/heartbeat with X-Host-Token. A 401/403
  means the JWT expired or the control plane's key changed: refresh (the new credentials are
  saved at once; the control plane revokes the old refresh token only when it issues the new
  one), then heartbeat again.
- Capsules are paused (once per loss) when the refresh is refused - the host was deleted or its
  tokens revoked, so no one can reach its capsules any more - or when the control plane has not
  answered for `pause_after_cp_lost_sec`. They are not resumed automatically: their owners do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from ..agentproto.specs import host_specs
from . import tls
from .config import AgentSettings
from .errors import StartupError

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0


class RegistrationError(StartupError):
    """The agent cannot register (no token, refused token, control plane unreachable)."""


@dataclass
class Credentials:
    host_id: str
    token: str
    refresh_token: str
    agent_secret: str

    @classmethod
    def load(cls, path: Path) -> Credentials | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise RegistrationError(f"unreadable credentials in {path}: {e}") from None

    @classmethod
    def of_response(cls, body: dict[str, Any]) -> Credentials:
        return cls(
            host_id=str(body["host"]["id"]),
            token=str(body["token"]),
            refresh_token=str(body["refresh_token"]),
            agent_secret=str(body["agent_secret"]),
        )

    def save(self, path: Path) -> None:
        """Whole or not at all: a temp file (0600) renamed over the old one."""
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class ControlPlaneLink:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        pause_all: Callable[[], Awaitable[object]],
        on_secret: Callable[[str], None],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        assert settings.control_plane_url
        self.settings = settings
        self._pause_all = pause_all
        self._on_secret = on_secret
        self._http = httpx.AsyncClient(
            base_url=settings.control_plane_url.rstrip("/"),
            timeout=HTTP_TIMEOUT,
            transport=transport,
        )
        self.credentials: Credentials | None = None
        # What the gRPC server presents; None on a unix socket (no network to protect).
        self.tls: tls.Identity | None = None
        self._last_answer = time.monotonic()
        self._paused = False

    async def close(self) -> None:
        await self._http.aclose()

    def load_identity(self) -> tls.Identity | None:
        """The TLS identity the gRPC server presents (None on a unix socket): the one the
        control plane pinned when this host registered, or a new one to register with."""
        if self.tls is None and not self.settings.listen.startswith("unix:"):
            path = self.settings.credentials_path
            if not path.exists():
                self.tls = tls.load_or_create(self.settings.data_dir)
            elif (pinned := tls.load(self.settings.data_dir)) is not None:
                self.tls = pinned
            else:
                raise RegistrationError(
                    f"the TLS identity the control plane pinned for this host is gone from "
                    f"{self.settings.data_dir / 'tls'}: delete {path} and register again "
                    "as a new host (POST /v1/hosts gives its token)"
                )
        return self.tls

    async def ensure_registered(self) -> Credentials:
        """Saved credentials, or new ones bought with the registration token."""
        identity = self.load_identity()
        saved = Credentials.load(self.settings.credentials_path)
        if saved is not None:
            self._adopt(saved, save=False)
            return saved
        token = self.settings.registration_token
        if token is None:
            raise RegistrationError(
                "this host is not registered: set WRENN_AGENT_REGISTRATION_TOKEN to the token "
                "from POST /v1/hosts"
            )
        body = {
            "token": token.get_secret_value(),
            "address": self.settings.advertise_address or self.settings.listen,
            **host_specs(self.settings.data_dir),
        }
        if identity is not None:
            body["tls_certificate"] = identity.cert_pem.decode()
        try:
            resp = await self._http.post("/v1/hosts/register", json=body)
        except httpx.HTTPError as e:
            raise RegistrationError(f"control plane unreachable: {e}") from None
        if resp.status_code != 201:
            raise RegistrationError(f"registration refused ({resp.status_code}): {_message(resp)}")
        credentials = Credentials.of_response(resp.json())
        self._adopt(credentials, save=True)
        log.info("registered as host %s", credentials.host_id)
        return credentials

    def _adopt(self, credentials: Credentials, *, save: bool) -> None:
        if save:
            credentials.save(self.settings.credentials_path)
        self.credentials = credentials
        self._on_secret(credentials.agent_secret)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self.settings.heartbeat_interval_sec)

    async def beat(self) -> None:
        """One heartbeat, refreshing the credentials if they are refused."""
        status = await self._heartbeat()
        if status in (401, 403):
            refreshed = await self._refresh()
            if refreshed is False:
                await self._lost("the control plane refused this host's credentials")
                return
            if refreshed:
                status = await self._heartbeat()
        if status == 204:
            self._last_answer = time.monotonic()
            if self._paused:
                log.info("control plane reachable again (paused capsules stay paused)")
            self._paused = False
            return
        limit = self.settings.pause_after_cp_lost_sec
        if limit and time.monotonic() - self._last_answer >= limit:
            await self._lost(f"no answer from the control plane for {limit:.0f} s")

    async def _heartbeat(self) -> int | None:
        """The heartbeat's status code; None if the control plane did not answer."""
        assert self.credentials is not None
        try:
            resp = await self._http.post(
                f"/v1/hosts/{self.credentials.host_id}/heartbeat",
                headers={"X-Host-Token": self.credentials.token},
            )
        except httpx.HTTPError as e:
            log.warning("heartbeat: control plane unreachable: %s", e)
            return None
        if resp.status_code != 204:
            log.warning("heartbeat refused (%s): %s", resp.status_code, _message(resp))
        return resp.status_code

    async def _refresh(self) -> bool | None:
        """True: new credentials; False: refused; None: no answer."""
        assert self.credentials is not None
        try:
            resp = await self._http.post(
                "/v1/hosts/auth/refresh", json={"refresh_token": self.credentials.refresh_token}
            )
        except httpx.HTTPError as e:
            log.warning("token refresh: control plane unreachable: %s", e)
            return None
        if resp.status_code == 200:
            self._adopt(Credentials.of_response(resp.json()), save=True)
            log.info("host token refreshed")
            return True
        log.error("token refresh refused (%s): %s", resp.status_code, _message(resp))
        return False if resp.status_code in (400, 401, 403) else None

    async def _lost(self, why: str) -> None:
        if self._paused:
            return
        self._paused = True
        log.error("%s: pausing every capsule on this host", why)
        await self._pause_all()


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]
