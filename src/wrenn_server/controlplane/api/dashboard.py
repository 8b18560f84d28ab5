"""The dashboard: a single-page app (web/, built to web/build) served from `/`.

Its hashed assets are mounted at /_app (cached for a year); any other GET that no route answers
(404) and that is not an API path gets the app's shell (`200.html`), whose router takes it from
there. So API routes, whenever they are added, always win, and an unknown path under an API root
(/v1, /v2, /api, /auth/oauth: the Go system's too, which clients may try) is still a JSON 404 in
the error body, never the shell with a 200.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from .csp import inline_script_hashes

SHELL = "200.html"
# The last three: E2B's control API (routes/e2b_*.py).
API_PREFIXES = (
    "/v1",
    "/v2",
    "/api",
    "/auth/oauth",
    "/docs",
    "/openapi",
    "/_app/",
    "/sandboxes",
    "/snapshots",
    "/templates",
)
STATIC_FILES = ("favicon.svg", "favicon.png", "robots.txt")


def shell_headers(shell_html: str) -> dict[str, str]:
    """Headers of the app's shell. Scripts: this origin's files, and the shell's own inline
    bootstrap script (SvelteKit's) by its hash, read from the built page, never any other
    inline script. Styles keep 'unsafe-inline': Svelte sets style attributes at run time. No
    other site may frame the dashboard."""
    hashes = "".join(" " + h for h in inline_script_hashes(shell_html))
    return {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": f"default-src 'self'; script-src 'self'{hashes}; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


# web/build beside the package's source tree (a checkout); absent in a wheel.
DEFAULT_DIR = Path(__file__).resolve().parents[4] / "web" / "build"


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def install(app: FastAPI, build_dir: Path) -> None:
    """Serve the dashboard from `build_dir` if it has been built. Call after the error handlers
    are installed: the dashboard takes over the 404s of page paths."""
    root = build_dir.resolve()
    shell = root / SHELL
    if not shell.is_file():
        return
    if (root / "_app").is_dir():
        app.mount("/_app", _Assets(directory=root / "_app"), name="dashboard-assets")
    headers = shell_headers(shell.read_text())
    api_404 = app.exception_handlers[StarletteHTTPException]

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        if exc.status_code == 404 and request.method == "GET" and not path.startswith(API_PREFIXES):
            name = path.lstrip("/")
            if name in STATIC_FILES and (root / name).is_file():
                return FileResponse(root / name)
            return FileResponse(shell, headers=headers)
        return await api_404(request, exc)  # type: ignore[no-any-return,misc]

    app.add_exception_handler(StarletteHTTPException, not_found)
