"""`wrenn up`: the whole platform on one box. The host agent and the control plane run as
separate processes (as they would on separate machines); the agent listens on a unix socket in
the data dir, so several instances (`--data-dir`, `--port`) can share a host."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import httpx
from pydantic import ValidationError
from rich.console import Console

from . import firstrun
from .controlplane.errors import Conflict
from .controlplane.settings import Settings
from .hostagent import base_upgrade, code_interpreter_image, code_runner_image
from .hostagent.base_image import MINIMAL
from .hostagent.config import AgentSettings
from .hostagent.templates import TemplateStore
from .private import private_dir
from .proto.hostagent.v1 import hostagent_pb2 as pb
from .supervisor import Child, StartupError, Supervisor

log = logging.getLogger(__name__)


def _secret(path: Path) -> str:
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _port_free(port: int) -> bool:
    """Free on 127.0.0.1, and on ::1 where the host has IPv6: `localhost` names (the dashboard's,
    the port proxy's `*.localhost`) resolve to both, and clients try ::1 first, so a stranger on
    [::1]:port would get the requests meant for the control plane."""
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            s = socket.socket(family)
        except OSError:  # no IPv6 on this host
            continue
        with s:
            try:
                s.bind((address, port))
            except OSError as e:
                if e.errno != errno.EADDRNOTAVAIL:  # ::1 not configured
                    return False
    return True


def proxy_domain(settings: Settings, port: int) -> str:
    """The port proxy's domain: WRENN_PROXY_DOMAIN, else `localhost:<port>`, which works on
    this machine out of the box (`*.localhost` resolves to loopback: browsers do it themselves,
    Debian with nss-myhostname, which scripts/install-deps.sh sets up) and is what the SDK
    derives from the base URL `http://localhost:<port>`."""
    return settings.proxy_domain or f"localhost:{port}"


def _http_ready(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def _unix_ready(path: Path) -> Callable[[], bool]:
    """Accepting connections: a socket file alone may be left by a killed agent."""

    def ready() -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            try:
                s.connect(str(path))
            except OSError:
                return False
        return True

    return ready


# `wrenn up`'s control plane processes by default: one per core, at most this many (each holds
# its own connections and caches; beyond a few, SQLite's single writer is the limit, not CPU).
MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """The cores this process may run on, between 1 and MAX_DEFAULT_WORKERS."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS))


def run_platform(
    data_dir: Path,
    port: int,
    console: Console,
    build_progress: Callable[[], Any],
    code_runner: bool = False,
    workers: int = 1,
) -> int:
    private_dir(data_dir)
    if not _port_free(port):
        console.print(f"[red]port {port} is in use: choose another with --port[/]")
        return 1
    try:
        # The control plane's settings (same data dir and WRENN_* environment).
        settings = Settings(data_dir=data_dir)
    except ValidationError as e:
        console.print(f"[red]{e}[/]", highlight=False)
        return 1
    agent_settings = AgentSettings(data_dir=data_dir)
    store = TemplateStore(agent_settings.templates_dir)
    base = agent_settings.default_template
    if not store.exists(base) or store.stale(base, MINIMAL):
        if store.exists(base):
            console.print("the base template was built by an older version: checking it")
        else:
            console.print("building the base template (first start only, about a minute)")
        progress, update = build_progress()
        with progress:
            check = asyncio.run(
                base_upgrade.ensure_current(store, agent_settings.capsules_dir, base, update)
            )
        if check.warning:
            console.print(f"[yellow]{check.warning}[/]", highlight=False)
    _offer_code_runner(store, code_runner, console, build_progress)

    agent_secret = _secret(data_dir / "agent-secret")
    socket_path = data_dir / "agent.sock"
    logs = data_dir / "logs"
    # `localhost`, not 127.0.0.1: the SDK derives the port proxy's domain from its base URL.
    api_url = f"http://localhost:{port}"
    domain = proxy_domain(settings, port)
    python = [sys.executable, "-m", "wrenn_server.cli"]
    supervisor = Supervisor(notify=lambda m: console.print(f"[yellow]{m}[/]", highlight=False))
    try:
        supervisor.start(
            Child(
                name="host agent",
                argv=[
                    *python,
                    "agent",
                    "--data-dir",
                    str(data_dir),
                    "--listen",
                    f"unix:{socket_path}",
                ],
                env={"WRENN_AGENT_SECRET": agent_secret},
                log_path=logs / "agent.log",
                ready=_unix_ready(socket_path),
                start_timeout=300,
            ),
            timeout=300,
        )
        supervisor.start(
            Child(
                name="control plane",
                argv=[
                    *python,
                    "server",
                    "--data-dir",
                    str(data_dir),
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                ],
                env={
                    "WRENN_AGENT_ADDRESS": f"unix:{socket_path}",
                    "WRENN_AGENT_SECRET": agent_secret,
                    "WRENN_JWT_SECRET": _secret(data_dir / "jwt_secret"),
                    "WRENN_PROXY_DOMAIN": domain,
                },
                log_path=logs / "controlplane.log",
                ready=_http_ready(f"http://127.0.0.1:{port}/health"),
                # Its worker processes outlive a killed parent and would keep the port.
                kill_group=True,
            )
        )
        creds_path = data_dir / "credentials.json"
        creds = firstrun.load(creds_path)
        e2b = firstrun.e2b_urls(api_url)
        if creds is None or (creds.api_url, creds.proxy_domain, creds.e2b) != (
            api_url,
            domain,
            e2b,
        ):
            if creds is None:
                creds = firstrun.create_admin(api_url, creds_path, settings)
            creds.api_url, creds.proxy_domain, creds.e2b = api_url, domain, e2b
            firstrun.save(creds_path, creds)
        console.print(firstrun.banner(creds, creds_path), soft_wrap=True, highlight=False)
    except (StartupError, httpx.HTTPError, Conflict) as e:
        console.print(f"[red]{e}[/] (logs in {logs})")
        supervisor.stop()
        return 1
    # Restarts a crashed agent or control plane; 1 after a crash loop.
    code = supervisor.wait()
    console.print("stopping: pausing running capsules (they resume with their memory)")
    supervisor.stop(keep=1)  # the control plane first: no new work arrives
    paused = asyncio.run(_pause_all(f"unix:{socket_path}", agent_secret, console, logs))
    supervisor.stop()
    console.print(f"stopped ({paused} capsule(s) paused)")
    return code


def _offer_code_runner(
    store: TemplateStore, build: bool, console: Console, build_progress: Callable[[], Any]
) -> None:
    """Build the code runner's template and the code interpreter's on it when asked (once: they
    are kept in the data dir), or say how; the control plane registers them once they exist."""
    if store.exists(code_runner_image.NAME) and store.exists(code_interpreter_image.NAME):
        return
    if not build:
        console.print(
            f"the code runner's templates ({code_runner_image.NAME!r}, "
            f"{code_interpreter_image.NAME!r}) are not built: start with --code-runner (or run "
            "`wrenn image build code-interpreter`, then restart) to add them"
        )
        return
    console.print(
        f"building {code_runner_image.NAME!r} and {code_interpreter_image.NAME!r} "
        "(first start only, a few minutes)"
    )
    progress, update = build_progress()
    with progress:
        asyncio.run(code_interpreter_image.ensure(store, update))


# How long `wrenn up`'s shutdown waits for the agent to pause every running capsule, in all.
SHUTDOWN_PAUSE_TIMEOUT = 300.0
# How long listing the capsules may take when the pause itself failed (to say which were left).
LIST_TIMEOUT = 10.0


class PausingAgent(Protocol):
    async def pause_all(
        self, request: pb.Empty, *, timeout: float | None = ...
    ) -> pb.PauseAllResponse: ...

    async def list_sandboxes(
        self, request: pb.ListSandboxesRequest, *, timeout: float | None = ...
    ) -> pb.ListSandboxesResponse: ...


@dataclass
class PauseReport:
    paused: list[str] = field(default_factory=list)
    # Capsule id -> why it was not paused.
    failed: dict[str, str] = field(default_factory=dict)
    # Set when not even the running capsules could be listed: how many were left is unknown.
    unknown: str | None = None


async def pause_for_shutdown(
    agent: PausingAgent, *, timeout: float = SHUTDOWN_PAUSE_TIMEOUT
) -> PauseReport:
    """Every running capsule paused by the agent (one failing does not stop the others: the
    agent goes on and logs each failure's cause), within `timeout` seconds in all. Never
    raises: a failure is reported per capsule, or as `unknown` when the agent cannot say."""
    try:
        res = await agent.pause_all(pb.Empty(), timeout=timeout)
    except Exception as e:
        reason = _reason(e)
        try:
            listed = await agent.list_sandboxes(pb.ListSandboxesRequest(), timeout=LIST_TIMEOUT)
        except Exception as listing:
            unlisted = f"the capsules could not be listed: {_reason(listing)}"
            return PauseReport(unknown=f"{reason}; {unlisted}")
        running = pb.SandboxStatus.SANDBOX_STATUS_RUNNING
        left = [sb.sandbox_id for sb in listed.sandboxes if sb.status == running]
        return PauseReport(failed=dict.fromkeys(left, reason))
    failed = dict.fromkeys(res.failed_sandbox_ids, "its pause failed (the agent log says why)")
    return PauseReport(paused=list(res.paused_sandbox_ids), failed=failed)


def _reason(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"the agent answered {error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


async def _pause_all(target: str, secret: str, console: Console, logs: Path) -> int:
    """Pause for shutdown, print each capsule left running and why; the number paused."""
    from .agentproto.client import AgentClient

    async with AgentClient(target, secret) as agent:
        report = await pause_for_shutdown(agent)
    return tell_pauses(report, console, logs)


def tell_pauses(report: PauseReport, console: Console, logs: Path) -> int:
    for sandbox_id, reason in report.failed.items():
        log.warning("capsule %s was not paused: %s", sandbox_id, reason)
        console.print(f"[yellow]capsule {sandbox_id} was not paused: {reason}[/]")
    if report.failed:
        console.print(
            f"[yellow]{len(report.failed)} capsule(s) not paused (see {logs / 'agent.log'})[/]"
        )
    if report.unknown:
        log.warning("capsules may not have been paused: %s", report.unknown)
        console.print(f"[yellow]capsules may not have been paused: {report.unknown}[/]")
    return len(report.paused)
