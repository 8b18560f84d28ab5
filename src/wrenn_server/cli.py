"""The `wrenn` command line."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from . import log

app = typer.Typer(
    help="Wrenn: run untrusted code in isolated, disposable capsules.", no_args_is_help=True
)
image_app = typer.Typer(help="Templates on this host.", no_args_is_help=True)
app.add_typer(image_app, name="image")
console = Console(stderr=True)

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
        str, typer.Argument(help="Only 'minimal' (Debian bookworm) for now.")
    ] = "minimal",
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if it exists.")] = False,
) -> None:
    """Build a base template with debootstrap (about a minute; reused afterwards)."""
    from .hostagent.templates import TemplateStore

    _require_root()
    if name != "minimal":
        console.print(f"[red]unknown base template {name!r}; available: minimal[/]")
        raise typer.Exit(2)
    store = TemplateStore(_agent_settings(data_dir).templates_dir)
    if store.exists(name):
        if not force:
            console.print(f"template {name!r} already built")
            return
        store.delete(name)
    progress, update = build_progress()
    with progress:
        t = asyncio.run(store.ensure_base(name, update))  # type: ignore[arg-type]
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
    from .hostagent.server import AgentServer

    _require_root()
    log.setup(os.environ.get("WRENN_LOG_LEVEL", "INFO"))
    settings = _agent_settings(data_dir, listen=listen)
    server = AgentServer(settings)
    asyncio.run(server.serve())


@app.command()
def server(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8080,
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
    # Idle keep-alive connections live longer than clients' pools usually keep them (httpx: 5 s),
    # so a client never sends on a connection the server is just closing.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_keep_alive=75,
    )


@app.command()
def up(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option(help="Port of the REST API.")] = 8080,
) -> None:
    """Start the whole platform on this machine: host agent and control plane as separate
    processes, SQLite and embedded defaults. Builds the base template on first start."""
    from .up import run_platform

    _require_root()
    log.setup(os.environ.get("WRENN_LOG_LEVEL", "WARNING"))
    settings = _agent_settings(data_dir)
    raise typer.Exit(run_platform(settings.data_dir, port, console, build_progress))


if __name__ == "__main__":
    app()
