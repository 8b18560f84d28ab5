"""How the control plane serves a built dashboard: assets under /_app (cached for good), the
app's shell for every other page path, and the API's own JSON answers left alone."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.settings import Settings


@pytest.fixture
async def served(
    settings: Settings, db: Database, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    build = tmp_path / "build"
    (build / "_app" / "immutable").mkdir(parents=True)
    (build / "200.html").write_text("<html>shell</html>")
    (build / "favicon.svg").write_text("<svg/>")
    (build / "_app" / "immutable" / "app.123.js").write_text("console.log(1)")
    app = create_app(settings.model_copy(update={"dashboard_dir": build}), db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as client:
        yield client


async def test_pages_get_the_shell_and_assets_are_immutable(served: httpx.AsyncClient) -> None:
    pages = ("/", "/login", "/dashboard/capsules/sb-1", "/admin/templates?tab=builds")
    for path in (*pages, "/auth/github/callback?code=x"):
        resp = await served.get(path)
        assert resp.status_code == 200 and resp.text == "<html>shell</html>", path
        assert resp.headers["cache-control"] == "no-cache"
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    asset = await served.get("/_app/immutable/app.123.js")
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    assert (await served.get("/favicon.svg")).text == "<svg/>"


async def test_the_api_keeps_its_answers(served: httpx.AsyncClient) -> None:
    paths = ("/v1/nope", "/v1", "/_app/missing.js", "/openapi.nope", "/v2/capsules", "/api")
    more = ("/api/v1/sandboxes", "/auth/oauth/github", "/auth/oauth/github/callback?code=x")
    for path in paths + more:
        resp = await served.get(path)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"] == "not_found", path
        assert resp.headers["content-type"] == "application/json", path
    assert (await served.post("/dashboard/capsules")).status_code in (404, 405)
    assert (await served.get("/v1/capsules")).status_code == 401  # a real route, unchanged
    assert (await served.get("/openapi.json")).status_code == 200
    # Path traversal reaches neither files outside the build nor anything but the shell.
    resp = await served.get("/_app/../../../etc/passwd")
    assert "root:" not in resp.text


async def test_without_a_build_only_the_api_is_served(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    app = create_app(settings.model_copy(update={"dashboard_dir": tmp_path / "none"}), db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as client:
        resp = await client.get("/dashboard")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


SHELL_SCRIPT = "\n\t{\n\t\tconst element = document.currentScript.parentElement;\n\t}\n"


async def test_the_shell_runs_no_inline_script_but_its_own(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    """The policy lets this origin's scripts run and the shell's bootstrap script by its hash,
    read from the built page: an injected inline script has no hash and does not run."""
    build = tmp_path / "build"
    build.mkdir()
    shell = f"<html><head></head><body><div><script>{SHELL_SCRIPT}</script></div></body></html>"
    (build / "200.html").write_text(shell)
    app = create_app(settings.model_copy(update={"dashboard_dir": build}), db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wrenn.test") as client:
        resp = await client.get("/capsules")
    policy = dict(
        part.strip().split(" ", 1) for part in resp.headers["content-security-policy"].split(";")
    )
    digest = base64.b64encode(hashlib.sha256(SHELL_SCRIPT.encode()).digest()).decode()
    assert policy["script-src"].split() == ["'self'", f"'sha256-{digest}'"]
    assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["style-src"] == "'self' 'unsafe-inline'"  # Svelte sets style attributes
