"""The file browser of a running capsule, against mocked listings and reads: the tree opens
folders in place, the breadcrumbs and the path input follow the current folder, a file is
previewed, a late listing does not move the view, a bad path is reported."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import Locator, Page, Route, expect

from tests.waiting import wait_for

from .conftest import MockApi
from .test_capsules import capsule


def entry(path: str, kind: str = "file", size: int = 12) -> dict[str, Any]:
    return {
        "name": path.rsplit("/", 1)[1],
        "path": path,
        "type": kind,
        "size": size if kind == "file" else 4096,
        "mode": 0o644,
        "permissions": "-rw-r--r--",
        "owner": "root",
        "group": "root",
        "modified_at": 1_767_225_600,
        "symlink_target": None,
    }


FS: dict[str, list[dict[str, Any]]] = {
    "/": [entry("/etc", "directory"), entry("/srv", "directory"), entry("/README")],
    "/etc": [entry("/etc/hostname"), entry("/etc/apt", "directory")],
    "/etc/apt": [entry("/etc/apt/sources.list")],
    "/srv": [],
}
CONTENT = {"/etc/hostname": b"capsule-1\n", "/README": b"line one\nline two\n"}


def serve_files(api: MockApi) -> Callable[[Route], Awaitable[None]]:
    async def listing(route: Route) -> None:
        path = json.loads(route.request.post_data or "{}")["path"]
        if path in FS:
            await route.fulfill(json={"entries": FS[path]})
        else:
            error = {"code": "not_found", "message": f"no such file or directory: {path}"}
            await route.fulfill(status=404, json={"error": error})

    async def read(route: Route) -> None:
        path = json.loads(route.request.post_data or "{}")["path"]
        await route.fulfill(body=CONTENT[path], content_type="application/octet-stream")

    api.on("POST", "/v1/capsules/cl-aaa/files/list", listing)
    api.on("POST", "/v1/capsules/cl-aaa/files/stream/read", read)
    return listing


async def open_files(page: Page, api: MockApi) -> Locator:
    api.on("GET", "/v1/capsules/cl-aaa", {"json": capsule("cl-aaa")})
    api.on("GET", "/v1/capsules/cl-aaa/metrics", {"json": {"points": []}})
    api.on("GET", "/v1/capsules/cl-aaa/ports", {"json": {"ports": []}})
    serve_files(api)
    await page.goto("/dashboard/capsules/cl-aaa")
    files = page.get_by_role("region", name="Files")
    await expect(files.get_by_role("treeitem", name="etc", exact=True)).to_be_visible()
    return files


async def test_navigate_the_tree_breadcrumbs_and_path(signed_in: Page, api: MockApi) -> None:
    files = await open_files(signed_in, api)
    crumbs = files.get_by_role("navigation", name="Breadcrumbs")
    path = files.get_by_label("Path")
    tree = files.get_by_role("tree")

    # Folders come first, then files.
    names = await tree.get_by_role("treeitem").evaluate_all("els => els.map(e => e.ariaLabel)")
    assert names == ["/", "etc", "srv", "README"]

    await tree.get_by_role("treeitem", name="etc", exact=True).locator(".name").click()
    await expect(crumbs.get_by_role("button", name="etc")).to_have_attribute(
        "aria-current", "location"
    )
    await expect(path).to_have_value("/etc")
    await expect(tree.get_by_role("treeitem", name="apt", exact=True)).to_be_visible()

    await tree.get_by_role("treeitem", name="hostname", exact=True).locator(".name").click()
    preview = files.get_by_role("region", name="File preview")
    await expect(preview).to_contain_text("/etc/hostname")
    await expect(preview.get_by_role("region", name="File content")).to_contain_text("capsule-1")

    await path.fill("/etc/apt/")
    await files.get_by_role("button", name="Go").click()
    await expect(crumbs.get_by_role("button", name="apt")).to_have_attribute(
        "aria-current", "location"
    )
    await expect(tree.get_by_role("treeitem", name="sources.list", exact=True)).to_be_visible()

    await crumbs.get_by_role("button", name="/").click()
    await expect(path).to_have_value("/")
    await expect(crumbs.get_by_role("button", name="etc")).to_have_count(0)
    # The previewed file stays previewed.
    await expect(preview).to_contain_text("/etc/hostname")


async def test_a_path_that_does_not_exist_is_reported(signed_in: Page, api: MockApi) -> None:
    files = await open_files(signed_in, api)
    await files.get_by_label("Path").fill("/no/such")
    await files.get_by_role("button", name="Go").click()
    await expect(files.get_by_role("alert")).to_contain_text("Cannot open /no")
    # What was typed stays, to be corrected; the current folder did not change.
    await expect(files.get_by_label("Path")).to_have_value("/no/such")
    crumbs = files.get_by_role("navigation", name="Breadcrumbs")
    await expect(crumbs.get_by_role("button", name="/")).to_have_attribute(
        "aria-current", "location"
    )


async def test_a_late_listing_does_not_move_the_view(signed_in: Page, api: MockApi) -> None:
    files = await open_files(signed_in, api)
    tree = files.get_by_role("tree")
    release = asyncio.Event()
    held: list[str] = []
    serve = serve_files(api)

    async def srv_late(route: Route) -> None:
        if json.loads(route.request.post_data or "{}")["path"] == "/srv":
            held.append("/srv")
            await release.wait()
        await serve(route)

    api.on("POST", "/v1/capsules/cl-aaa/files/list", srv_late)
    await tree.get_by_role("treeitem", name="srv", exact=True).locator(".name").click()
    await wait_for(lambda: held)
    await tree.get_by_role("treeitem", name="etc", exact=True).locator(".name").click()
    await expect(files.get_by_label("Path")).to_have_value("/etc")
    # /srv answers now, after the newer choice: it is listed, but the view stays on /etc.
    release.set()
    await expect(tree.get_by_role("treeitem", name="srv", exact=True)).to_have_attribute(
        "aria-expanded", "true"
    )
    await expect(tree.get_by_text("Empty folder")).to_be_visible()
    await expect(files.get_by_label("Path")).to_have_value("/etc")
    crumbs = files.get_by_role("navigation", name="Breadcrumbs")
    await expect(crumbs.get_by_role("button", name="etc")).to_have_attribute(
        "aria-current", "location"
    )
