"""The host agent process: startup -> serve -> shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path

import grpc

from ..addresses import is_local
from ..agentproto.channel import GRPC_OPTIONS
from ..agentproto.tls import fingerprint
from ..private import private_dir, private_file
from ..proto.hostagent.v1 import hostagent_pb2_grpc as pb_grpc
from . import base_upgrade, reaper, tls
from .config import AgentSettings
from .controlplane_link import ControlPlaneLink
from .errors import StartupError
from .gvisor import GVisorRuntime
from .manager import SandboxManager
from .service import HostAgentService
from .templates import TemplateStore
from .versions import host_versions

log = logging.getLogger(__name__)


class AgentServer:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.templates = TemplateStore(settings.templates_dir)
        self.runtime = GVisorRuntime(settings, self.templates)
        self.manager = SandboxManager(settings, self.runtime, self.templates)
        self.server: grpc.aio.Server | None = None
        # A host that registers with a control plane refuses every caller until registration
        # gives it the secret (no one knows this one): it serves before registering.
        secret = secrets.token_urlsafe(32) if settings.control_plane_url else settings.secret
        self.service = HostAgentService(self.manager, secret)
        self.link: ControlPlaneLink | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self.port = 0
        self._lock_fd = -1

    def _lock_data_dir(self) -> None:
        """One agent per data dir: a second would adopt (and fight over) the first's capsules."""
        private_dir(self.settings.data_dir)
        fd = os.open(self.settings.data_dir / "agent.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(
                f"another host agent is using {self.settings.data_dir}; give this one its own "
                "--data-dir"
            ) from None
        self._lock_fd = fd

    async def startup(self, progress: Callable[[float, str], None] | None = None) -> None:
        self.settings.check_secret()
        self._lock_data_dir()
        # Built on a fresh data dir; after an upgrade rebuilt if stale and unused, else kept
        # with a warning (base_upgrade.py).
        await base_upgrade.ensure_current(
            self.templates,
            self.settings.capsules_dir,
            self.settings.default_template,
            progress or (lambda f, m: None),
        )
        reaper.install(asyncio.get_running_loop())
        self.service.versions = await host_versions(self.settings.runsc)
        await self.manager.start()
        identity = None
        if self.settings.control_plane_url:
            self.link = ControlPlaneLink(
                self.settings, pause_all=self.manager.pause_all, on_secret=self.service.set_secret
            )
            identity = self.link.load_identity()
        server = await self._listen(identity)
        if self.link is not None:
            # Registered once serving: the control plane marks the host online on registration
            # and may call it at once (a refused connection would make it wait to retry).
            try:
                await self.link.ensure_registered()
            except BaseException:
                await server.stop(None)
                raise
            self._heartbeats = asyncio.create_task(self.link.run_forever(), name="heartbeats")

    async def _listen(self, identity: tls.Identity | None) -> grpc.aio.Server:
        if self.settings.listen.startswith("unix:"):
            # A socket left by a killed agent; the data-dir lock says it is no one's now.
            Path(self.settings.listen.removeprefix("unix:")).unlink(missing_ok=True)
        server = self.server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_HostAgentServicer_to_server(self.service, server)
        if identity is not None:
            credentials = grpc.ssl_server_credentials([(identity.key_pem, identity.cert_pem)])
            self.port = server.add_secure_port(self.settings.listen, credentials)
        else:
            if not _local(self.settings.listen):
                log.warning(
                    "listening on %s without TLS: register this host with a control plane "
                    "(WRENN_AGENT_CONTROL_PLANE_URL) to get TLS, or listen on a unix socket",
                    self.settings.listen,
                )
            self.port = server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {self.settings.listen}")
        await server.start()
        if self.settings.listen.startswith("unix:"):
            private_file(Path(self.settings.listen.removeprefix("unix:")))
        log.info("host agent listening on %s", self.settings.listen)
        if identity is not None:
            log.info("TLS certificate SHA-256 %s", fingerprint(identity.cert_pem))
        return server

    async def shutdown(self, grace: float = 10.0) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
        if self.link is not None:
            await self.link.close()
        if self.server:
            await self.server.stop(grace)
        await self.manager.stop()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    async def serve(self) -> None:
        """Run until SIGINT/SIGTERM. Capsules keep running; the next start adopts them."""
        await self.startup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.shutdown()


def _local(listen: str) -> bool:
    """A unix socket or a loopback address: nothing crosses a network."""
    return is_local(listen)
