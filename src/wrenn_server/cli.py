"""The `wrenn` command line."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from . import log

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .controlplane.settings import Settings

app = typer.Typer(
    help="Wrenn: run untrusted code in isolated, disposable capsules.", no_args_is_help=True
)
image_app = typer.Typer(help="Templates on this host.", no_args_is_help=True)
app.add_typer(image_app, name="image")
admin_app = typer.Typer(help="Platform administration of the control plane.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
console = Console(stderr=True)

# Idle keep-alive connections live longer than clients' pools usually keep them (httpx: 5 s),
# so a client never sends on a connection the server is just closing.
KEEP_ALIVE_SEC = 75

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Agent data directory (default /var/lib/wrenn).")
]


def _agent_settings(data_dir: Path | None, **overrides: object):  # type: ignore[no-untyped-def]
    from .hostagent.config import AgentSettings

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return AgentSettings(**values)  # type: ignore[arg-type]


def _require_root() -> None:
    if os.geteuid() != 0:
        console.print("[red]this command must run as root (it manages mounts and namespaces)[/]")
        raise typer.Exit(1)


def build_progress() -> tuple[Progress, object]:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[step]}"),
        console=console,
    )
    task = progress.add_task("base template", total=1.0, step="")

    def update(fraction: float, step: str) -> None:
        progress.update(task, completed=fraction, step=step[:48])

    return progress, update


@image_app.command("build")
def image_build(
    name: Annotated[
        str,
        typer.Argument(
            help="'minimal' (Debian bookworm), 'code-runner' (template code-runner-beta) or "
            "'code-interpreter' (template code-interpreter-v1, for E2B's code interpreter SDK)."
        ),
    ] = "minimal",
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if it exists.")] = False,
) -> None:
    """Build a template on this host with debootstrap (minimal: about a minute; code-runner: a few
    minutes; reused afterwards)."""
    from .hostagent import base_image, base_upgrade, code_interpreter_image, code_runner_image
    from .hostagent.templates import TemplateStore

    _require_root()
    recipes = {
        "minimal": ("minimal", base_image.MINIMAL),
        "code-runner": (code_runner_image.NAME, code_runner_image.RECIPE),
        "code-interpreter": (code_interpreter_image.NAME, code_interpreter_image.RECIPE),
    }
    if name not in recipes:
        console.print(f"[red]unknown template {name!r}; available: {', '.join(recipes)}[/]")
        raise typer.Exit(2)
    template, recipe = recipes[name]
    settings = _agent_settings(data_dir)
    store = TemplateStore(settings.templates_dir)
    if store.exists(template):
        if not force:
            console.print(f"template {template!r} already built")
            return
        # Capsules and snapshot templates mount its tree: removing it would break them.
        used_by = base_upgrade.users(store, settings.capsules_dir, template)
        if used_by:
            console.print(
                f"[red]template {template!r} is in use by {', '.join(used_by)}: destroy those "
                "first (GET /v1/capsules lists capsules; paused ones count too)[/]",
                highlight=False,
            )
            raise typer.Exit(1)
        store.delete(template)
    progress, update = build_progress()
    with progress:
        if name == "code-interpreter":  # on the code runner's template: that one first
            t = asyncio.run(code_interpreter_image.ensure(store, update))  # type: ignore[arg-type]
        else:
            t = asyncio.run(store.ensure_base(template, update, recipe))  # type: ignore[arg-type]
    console.print(f"built {t.name}: {t.size_bytes / 1e6:.0f} MB")


@image_app.command("list")
def image_list(data_dir: DataDir = None) -> None:
    """List templates on this host."""
    from .hostagent.templates import TemplateStore

    for t in TemplateStore(_agent_settings(data_dir).templates_dir).all():
        typer.echo(f"{t.name}\t{t.type}\t{t.size_bytes}\t{t.base or ''}")


@app.command()
def agent(
    data_dir: DataDir = None,
    listen: Annotated[str | None, typer.Option(help="host:port for gRPC.")] = None,
) -> None:
    """Run the host agent (root). Settings also come from WRENN_AGENT_* variables."""
    from .hostagent.errors import StartupError
    from .hostagent.server import AgentServer

    _require_root()
    log.setup(os.environ.get("WRENN_LOG_LEVEL", "INFO"))
    settings = _agent_settings(data_dir, listen=listen)
    server = AgentServer(settings)
    try:
        asyncio.run(server.serve())
    except StartupError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None


@app.command()
def server(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8080,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes serving the API on the same port (one of them at a time runs the "
            "reconciler and the stats sampler). More than one needs PostgreSQL or SQLite on a "
            "local disk.",
        ),
    ] = 1,
) -> None:
    """Run the control plane (REST API). Settings also come from WRENN_* variables."""
    import uvicorn

    from .controlplane.app import create_app
    from .controlplane.settings import Settings

    log.setup(os.environ.get("WRENN_LOG_LEVEL", "INFO"))
    overrides: dict[str, object] = {"host": host, "port": port}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = Settings(**overrides)  # type: ignore[arg-type]
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "timeout_keep_alive": KEEP_ALIVE_SEC,
        # The C parser, never a silent fall back to h11 (docs/performance.md, the listing).
        "http": "httptools",
    }
    if workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    asyncio.run(_prepare_database(settings))
    # Each worker builds its app from the environment (uvicorn imports the factory there).
    os.environ.update({"WRENN_DATA_DIR": str(settings.data_dir), "WRENN_MIGRATE_ON_START": "false"})
    from uvicorn.supervisors import Multiprocess

    # A worker still starting on a busy host answers uvicorn's health pings late: give it
    # longer than the default 5 s before it is taken for hung, killed and replaced (seen at
    # load ~19; a host that slow at every start would never get a worker serving).
    config = uvicorn.Config(
        "wrenn_server.cli:worker_app",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=60,
        **common,
    )
    Multiprocess(config, sockets=[_listen(host, port)]).run()


def worker_app() -> FastAPI:
    """One `--workers` process's application, built from the environment. A worker is a fresh
    interpreter (multiprocessing's spawn): it sets up its own logging, else its log lines (the
    reconciler's, errors) would be lost."""
    from .controlplane.app import create_app

    log.setup(os.environ.get("WRENN_LOG_LEVEL", "INFO"))
    return create_app()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket the workers share. Made with proto=IPPROTO_TCP: asyncio turns on
    TCP_NODELAY only for sockets that say they are TCP, accepted sockets inherit the listener's
    proto, and uvicorn's own (proto 0) left each response waiting ~40 ms for a delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


async def _prepare_database(settings: Settings) -> None:
    from .controlplane.app import prepare_database
    from .controlplane.db.session import Database

    database = Database(settings.effective_database_url)
    try:
        await prepare_database(settings, database)
    finally:
        await database.dispose()


@app.command()
def up(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option(help="Port of the REST API.")] = 8080,
    code_runner: Annotated[
        bool,
        typer.Option(
            "--code-runner",
            help="Also build the code runner's template (code-runner-beta) if it is missing.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Control plane processes serving the API (default: one per core, at most 4).",
        ),
    ] = None,
) -> None:
    """Start the whole platform on this machine: host agent and control plane as separate
    processes, SQLite and embedded defaults. Builds the base template on first start (and the
    code runner's with --code-runner)."""
    from .up import default_workers, run_platform

    _require_root()
    log.setup(os.environ.get("WRENN_LOG_LEVEL", "WARNING"))
    settings = _agent_settings(data_dir)
    raise typer.Exit(
        run_platform(
            settings.data_dir,
            port,
            console,
            build_progress,
            code_runner=code_runner,
            workers=workers or default_workers(),
        )
    )


def _create_user(
    data_dir: Path | None, email: str, name: str, password: str, is_admin: bool
) -> str:
    """Migrate the control plane database of `wrenn server`'s settings and add the account;
    its wire id."""
    from .controlplane import provision
    from .controlplane.settings import Settings

    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = Settings(**overrides)  # type: ignore[arg-type]
    return asyncio.run(
        provision.create_user(
            settings, email=email, name=name, password=password, is_admin=is_admin
        )
    )


@admin_app.command("create-user")
def admin_create_user(
    email: Annotated[str, typer.Option("--email", help="Login email.")],
    name: Annotated[str, typer.Option("--name", help="Display name.")],
    password: Annotated[
        str | None,
        typer.Option("--password", help="Password (at least 8 characters); generated if omitted."),
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user a platform admin.")] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Control plane data directory (as for `wrenn server`)."),
    ] = None,
) -> None:
    """Create an active account with its default team in the control plane database
    (WRENN_DATABASE_URL, or the SQLite file in the data dir), migrating it first."""
    import secrets

    from pydantic import TypeAdapter, ValidationError

    from .controlplane.errors import Conflict
    from .controlplane.schemas.auth import SignupRequest

    generated = password is None
    if password is None:
        password = secrets.token_urlsafe(18)
    try:
        request = TypeAdapter(SignupRequest).validate_python(
            {"email": email, "password": password, "name": name}
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        console.print(f"[red]invalid input: {problems}[/]")
        raise typer.Exit(2) from None
    try:
        user_id = _create_user(data_dir, request.email, request.name, request.password, admin)
    except Conflict as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(1) from None
    role = "platform admin" if admin else "user"
    typer.echo(f"created {role} {request.email} ({user_id})")
    if generated:
        typer.echo(f"password: {password}")


@app.command("migrate")
def migrate_command(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Change nothing: exit 1 if migrations are pending (or the revision is unknown).",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Control plane data directory (as for `wrenn server`)."),
    ] = None,
) -> None:
    """Upgrade the control plane database (WRENN_DATABASE_URL, or the SQLite file in the data dir)
    to this version's newest schema revision. `wrenn server` does it at start unless
    WRENN_MIGRATE_ON_START=false; run this first where migrations are a separate step."""
    from .controlplane.db.migrate import (
        UnknownRevision,
        current_revision,
        migrate,
        pending_revisions,
    )
    from .controlplane.settings import Settings

    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    url = Settings(**overrides).effective_database_url  # type: ignore[arg-type]
    current = asyncio.run(current_revision(url))
    try:
        pending = pending_revisions(current)
    except UnknownRevision as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    shown = current or "none (empty database)"
    if not pending:
        typer.echo(f"database at {shown}: up to date")
        return
    if check:
        typer.echo(f"database at {shown}: {len(pending)} pending ({', '.join(pending)})")
        raise typer.Exit(1)
    typer.echo(f"migrating from {shown} to {pending[-1]} ({', '.join(pending)})")
    asyncio.run(migrate(url))
    typer.echo(f"database at {asyncio.run(current_revision(url))}: up to date")


if __name__ == "__main__":
    app()
