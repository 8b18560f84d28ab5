"""Swagger UI at /docs, served from this server: its script and styles come from the
swagger-ui-bundle package, not from a CDN. /docs shares its origin with the dashboard, which
keeps the user's token, so no third party's script may run there: the page's content security
policy allows this origin's scripts plus the one inline bootstrap script, by its hash.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from .csp import inline_script_hashes

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"


def _page(title: str, openapi_url: str) -> tuple[str, dict[str, str]]:
    """The page and its headers."""
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - Swagger UI",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
        # Swagger UI would otherwise send the document to validator.swagger.io for a badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
    html = bytes(page.body).decode()
    hashes = " ".join(inline_script_hashes(html))
    policy = (
        f"default-src 'self'; script-src 'self' {hashes}; "
        # Swagger UI sets style attributes from its scripts.
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    )
    return html, {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff"}


def install(app: FastAPI, openapi_url: str) -> None:
    """Serve Swagger UI at /docs (create the app with `docs_url=None`)."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    html, headers = _page(app.title, openapi_url)

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)
