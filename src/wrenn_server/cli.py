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
def up(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option(help="Port of the host agent's gRPC API.")] = 50051,
) -> None:
    """Start the platform on this machine: builds the base template on first start (with a
    progress bar), then serves until Ctrl-C."""
    import secrets

    from .hostagent.server import AgentServer

    _require_root()
    log.setup(os.environ.get("WRENN_LOG_LEVEL", "WARNING"))
    settings = _agent_settings(data_dir, listen=f"127.0.0.1:{port}")
    secret_file = settings.data_dir / "agent-secret"
    if not secret_file.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(secret_file, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    settings.secret = secret_file.read_text().strip()
    server = AgentServer(settings)

    async def main() -> None:
        progress, update = build_progress()
        if not server.templates.exists(settings.default_template):
            console.print("building the base template (first start only, about a minute)")
            with progress:
                await server.templates.ensure_base(settings.default_template, update)  # type: ignore[arg-type]
        console.print(
            f"[green]host agent ready[/] on {settings.listen} "
            f"(secret in {secret_file}); Ctrl-C stops it"
        )
        await server.serve()

    asyncio.run(main())


if __name__ == "__main__":
    app()
