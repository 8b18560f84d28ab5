"""The file browser of a capsule's detail page: a tree of the capsule's files (WAI-ARIA tree
pattern), breadcrumbs and a path input for the current folder, and a preview of the selected
file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Error, Locator, Page, Request, Route, expect

from .conftest import Account, Platform, SignIn
from .test_capsules import new_capsule


async def run(platform: Platform, account: Account, capsule_id: str, script: str) -> str:
    resp = await platform.api.post(
        f"/v1/capsules/{capsule_id}/exec",
        json={"cmd": "sh", "args": ["-c", script], "timeout_sec": 60},
        headers=account.headers,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["exit_code"] == 0, body
    return body["stdout"]


async def open_files(platform: Platform, signed_in: SignIn) -> tuple[Page, Account, dict[str, Any]]:
    account = await platform.signup()
    capsule = await new_capsule(platform, account)
    page = await signed_in(account)
    await page.goto(f"{platform.url}/dashboard/capsules/{capsule['id']}")
    return page, account, capsule


def item(scope: Locator, name: str) -> Locator:
    """The tree item called `name` within `scope` (the tree, or a folder's item)."""
    return scope.get_by_role("treeitem", name=name, exact=True)


async def open_folder(folder: Locator) -> None:
    """Clicks a folder's name: its row, not one of its children drawn inside the item."""
    await folder.click(position={"x": 48, "y": 10})


async def toggle(folder: Locator) -> None:
    """Clicks a folder's disclosure triangle."""
    await folder.click(position={"x": 12, "y": 10})


async def go(files: Locator, path: str) -> None:
    await files.get_by_label("Path").fill(path)
    await files.get_by_role("button", name="Go").click()


class Held:
    """A request of the page held back until the test releases it: a reply made late."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.released = asyncio.Event()
        self.request: Request | None = None

    async def sent(self) -> Request:
        """Waits until the page has sent the request."""
        await asyncio.wait_for(self.arrived.wait(), 30)
        assert self.request is not None
        return self.request

    async def answered(self) -> None:
        """Lets the reply through and waits until the page has received all of it."""
        request = await self.sent()
        self.released.set()
        response = await asyncio.wait_for(request.response(), 30)
        assert response is not None
        await asyncio.wait_for(response.finished(), 30)
        # and the page has run what was queued on receiving it
        await page_settled(request)


async def page_settled(request: Request) -> None:
    await request.frame.evaluate(
        "() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)))"
    )


@contextlib.asynccontextmanager
async def holding(page: Page, url: str, path: str) -> AsyncIterator[Held]:
    """Holds the page's first request to `url` about the capsule path `path` until the test
    lets it through; every other request passes."""
    held = Held()

    async def handle(route: Route) -> None:
        body = route.request.post_data_json
        if held.request is None and isinstance(body, dict) and body.get("path") == path:
            held.request = route.request
            held.arrived.set()
            await held.released.wait()
        with contextlib.suppress(Error):  # the page went away meanwhile
            await route.continue_()

    await page.route(url, handle)
    try:
        yield held
    finally:
        held.released.set()
        await page.unroute(url, handle)


async def loaded_tree(page: Page) -> tuple[Locator, Locator]:
    """The Files region and its tree, once the root folder has listed."""
    files = page.get_by_role("region", name="Files")
    tree = files.get_by_role("tree", name="Files of the capsule")
    await expect(item(tree, "tmp")).to_be_visible(timeout=30_000)
    return files, tree


async def test_browse_into_etc_and_preview_hostname(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    hostname = await run(platform, account, capsule["id"], "cat /etc/hostname")
    files, tree = await loaded_tree(page)
    crumbs = files.get_by_role("navigation", name="Breadcrumbs")
    root = item(tree, "/")
    await expect(root).to_have_attribute("aria-expanded", "true")
    await expect(root).to_have_attribute("aria-selected", "true")
    etc = item(root, "etc")
    await expect(etc).to_have_attribute("aria-expanded", "false")

    await open_folder(etc)
    await expect(etc).to_have_attribute("aria-expanded", "true")
    await expect(etc).to_have_attribute("aria-selected", "true")
    await expect(root).to_have_attribute("aria-selected", "false")
    await expect(item(etc, "hostname")).to_be_visible()
    await expect(crumbs.get_by_role("button", name="etc")).to_have_attribute(
        "aria-current", "location"
    )
    await expect(files.get_by_label("Path")).to_have_value("/etc")

    await item(etc, "hostname").click()
    await expect(item(etc, "hostname")).to_have_attribute("aria-selected", "true")
    preview = files.get_by_role("region", name="File preview")
    await expect(preview).to_contain_text("/etc/hostname")
    content = preview.get_by_role("region", name="File content")
    first = content.get_by_role("row").first
    await expect(first.locator("td").first).to_have_text("1")
    await expect(first.locator("td").nth(1)).to_have_text(hostname.strip())

    # A download of the file, through the browser.
    async with page.expect_download() as info:
        await preview.get_by_role("button", name="Download").click()
    download = await info.value
    assert download.suggested_filename == "hostname"
    assert Path(await download.path()).read_text() == hostname

    # Back up through the breadcrumbs: the tree keeps what is open.
    await crumbs.get_by_role("button", name="/").click()
    await expect(files.get_by_label("Path")).to_have_value("/")
    await expect(root).to_have_attribute("aria-selected", "true")
    await expect(etc).to_have_attribute("aria-expanded", "true")
    await expect(preview).to_contain_text("/etc/hostname")

    # Then by typing a path, which opens the folders down to it.
    await go(files, "/etc/apt")
    apt = item(etc, "apt")
    await expect(apt).to_have_attribute("aria-expanded", "true")
    await expect(apt).to_have_attribute("aria-selected", "true")
    await expect(item(apt, "sources.list.d")).to_be_visible()
    await expect(crumbs.get_by_role("button", name="apt")).to_have_attribute(
        "aria-current", "location"
    )
    await expect(files.get_by_label("Path")).to_have_value("/etc/apt")

    # A path that does not exist: an error, and the tree and the current folder stay.
    await go(files, "/no/such/dir")
    alert = files.get_by_role("alert")
    await expect(alert).to_be_visible()
    await expect(alert).to_contain_text("/no")
    await expect(files.get_by_label("Path")).to_have_value("/no/such/dir")
    await expect(crumbs.get_by_role("button", name="apt")).to_have_attribute(
        "aria-current", "location"
    )
    await expect(item(apt, "sources.list.d")).to_be_visible()
    await expect(item(root, "tmp")).to_be_visible()
    # The next choice clears the error.
    await crumbs.get_by_role("button", name="etc").click()
    await expect(alert).to_have_count(0)
    await expect(files.get_by_label("Path")).to_have_value("/etc")


async def test_large_and_long_files(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    await run(
        platform,
        account,
        capsule["id"],
        "head -c 11000000 /dev/zero > /tmp/big && seq 1 6000 > /tmp/lines.txt"
        " && printf 'a\\000b' > /tmp/blob.bin",
    )
    files, tree = await loaded_tree(page)
    await go(files, "/tmp")
    tmp = item(tree, "tmp")
    await expect(tmp).to_have_attribute("aria-expanded", "true")
    preview = files.get_by_role("region", name="File preview")

    await item(tmp, "big").click()
    await expect(preview).to_contain_text("too large to preview")
    await expect(preview.get_by_role("button", name="Download file")).to_be_visible()
    await expect(preview.get_by_role("region", name="File content")).to_have_count(0)

    await item(tmp, "lines.txt").click()
    content = preview.get_by_role("region", name="File content")
    await expect(content.get_by_role("row")).to_have_count(5000)
    await expect(content.get_by_role("row").last).to_contain_text("5000")
    footer = preview.get_by_role("note")
    await expect(footer).to_contain_text("Showing the first 5,000 of 6,000 lines")
    async with page.expect_download() as info:
        await footer.get_by_role("button", name="Download the full file").click()
    download = await info.value
    assert download.suggested_filename == "lines.txt"
    text = Path(await download.path()).read_text()
    assert text.splitlines()[-1] == "6000"

    await item(tmp, "blob.bin").click()
    await expect(preview).to_contain_text("binary file")
    await expect(preview.get_by_role("region", name="File content")).to_have_count(0)


async def test_quick_clicks_keep_the_last_choice(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    await run(
        platform,
        account,
        capsule["id"],
        "seq 1 3 > /tmp/a.txt && echo b > /tmp/b.txt && ln -s /etc /tmp/link",
    )
    files, tree = await loaded_tree(page)
    path = files.get_by_label("Path")
    tmp = item(tree, "tmp")
    # Two folders clicked in the same instant, the first one's listing answered last: both
    # open, the last one clicked becomes the current one.
    async with holding(page, "**/files/list", "/etc") as etc_listing:
        await page.evaluate(
            """() => {
                const tree = document.querySelector('[role="tree"]');
                tree.querySelector('[role="treeitem"][aria-label="etc"]').click();
                tree.querySelector('[role="treeitem"][aria-label="tmp"]').click();
            }"""
        )
        await etc_listing.sent()
        await expect(item(tmp, "a.txt")).to_be_visible()
        await expect(path).to_have_value("/tmp")
        await etc_listing.answered()
        await expect(item(item(tree, "etc"), "passwd")).to_be_visible()  # the late answer
    # Checked at once, not retried: a view the page corrects later is still a wrong view.
    assert await path.input_value() == "/tmp"  # it did not move the current folder
    assert await tmp.get_attribute("aria-selected") == "true"

    # A symlink (tried as a folder first) then a file, the link's listing answered last: it
    # opens in place, and the file stays the choice.
    link = item(tmp, "link")
    preview = files.get_by_role("region", name="File preview")
    async with holding(page, "**/files/list", "/tmp/link") as link_listing:
        await page.evaluate(
            """() => {
                const tmp = document.querySelector('[role="treeitem"][aria-label="tmp"]');
                tmp.querySelector('[role="treeitem"][aria-label="link"]').click();
                tmp.querySelector('[role="treeitem"][aria-label="a.txt"]').click();
            }"""
        )
        await link_listing.sent()
        await expect(preview).to_contain_text("/tmp/a.txt")
        await link_listing.answered()
        await expect(item(link, "passwd")).to_be_visible()  # the late answer
    assert await path.input_value() == "/tmp"
    assert "/tmp/a.txt" in await preview.inner_text()
    assert await item(tmp, "a.txt").get_attribute("aria-selected") == "true"

    # Two files, the first one's content answered last: the preview is of the last one.
    content = preview.get_by_role("region", name="File content")
    async with holding(page, "**/files/stream/read", "/tmp/b.txt") as b_read:
        await item(tmp, "b.txt").click()
        await b_read.sent()
        await item(tmp, "a.txt").click()
        await expect(preview).to_contain_text("/tmp/a.txt")
        await expect(content.get_by_role("row")).to_have_count(3)
        await b_read.answered()
    assert "/tmp/a.txt" in await preview.inner_text()
    assert await content.get_by_role("row").count() == 3  # not b.txt's one line
    assert await item(tmp, "a.txt").get_attribute("aria-selected") == "true"


async def test_folders_open_and_close_in_place(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    await run(
        platform,
        account,
        capsule["id"],
        "mkdir -p /tmp/t/one/inner /tmp/t/two && touch /tmp/t/one/f1 /tmp/t/two/f2"
        " && touch /tmp/t/one/inner/deep",
    )
    files, tree = await loaded_tree(page)
    await go(files, "/tmp/t")
    t = item(tree, "t")
    one, two = item(t, "one"), item(t, "two")
    await expect(one).to_have_attribute("aria-expanded", "false")

    # The name opens a folder and enters it; folders come first, then files, by name.
    await open_folder(one)
    await expect(item(one, "f1")).to_be_visible()
    await expect(files.get_by_label("Path")).to_have_value("/tmp/t/one")
    group = one.get_by_role("group").first
    await expect(group.get_by_role("treeitem")).to_have_count(2)
    await expect(group.get_by_role("treeitem").first).to_have_attribute("aria-label", "inner")
    await expect(group.get_by_role("treeitem").last).to_have_attribute("aria-label", "f1")
    await open_folder(item(one, "inner"))
    await expect(item(one, "deep")).to_be_visible()

    # The triangle only opens and closes: the current folder stays.
    await toggle(two)
    await expect(two).to_have_attribute("aria-expanded", "true")
    await expect(item(two, "f2")).to_be_visible()
    await expect(files.get_by_label("Path")).to_have_value("/tmp/t/one/inner")

    # Closing one folder leaves its sibling open; opening it again shows its open subfolder.
    await toggle(one)
    await expect(one).to_have_attribute("aria-expanded", "false")
    await expect(item(tree, "f1")).to_have_count(0)
    await expect(item(tree, "deep")).to_have_count(0)
    await expect(two).to_have_attribute("aria-expanded", "true")
    await expect(item(two, "f2")).to_be_visible()
    await toggle(one)
    await expect(item(one, "f1")).to_be_visible()
    await expect(item(one, "inner")).to_have_attribute("aria-expanded", "true")
    await expect(item(one, "deep")).to_be_visible()

    # Refresh lists the open folders again.
    await run(platform, account, capsule["id"], "touch /tmp/t/two/f3 && rm /tmp/t/one/f1")
    await files.get_by_role("button", name="Refresh").click()
    await expect(item(two, "f3")).to_be_visible()
    await expect(item(tree, "f1")).to_have_count(0)
    await expect(item(one, "deep")).to_be_visible()
    await expect(item(two, "f2")).to_be_visible()


async def test_path_input_opens_the_ancestors(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    await run(
        platform,
        account,
        capsule["id"],
        "mkdir -p /tmp/deep/a/b/c && echo leaf > /tmp/deep/a/b/c/leaf.txt",
    )
    files, tree = await loaded_tree(page)
    crumbs = files.get_by_role("navigation", name="Breadcrumbs")
    await go(files, "/tmp/deep/a/../a/b/c/")
    await expect(files.get_by_label("Path")).to_have_value("/tmp/deep/a/b/c")
    for name in ("/", "tmp", "deep", "a", "b", "c"):
        await expect(item(tree, name)).to_have_attribute("aria-expanded", "true")
    c = item(tree, "c")
    await expect(c).to_have_attribute("aria-selected", "true")
    await expect(c).to_have_attribute("aria-level", "6")
    await expect(item(c, "leaf.txt")).to_be_visible()
    await expect(crumbs.get_by_role("button")).to_have_text(["/", "tmp", "deep", "a", "b", "c"])
    await expect(crumbs.get_by_role("button", name="c")).to_have_attribute(
        "aria-current", "location"
    )

    # A breadcrumb enters an ancestor; its subfolders stay open.
    await crumbs.get_by_role("button", name="deep").click()
    await expect(files.get_by_label("Path")).to_have_value("/tmp/deep")
    await expect(item(tree, "deep")).to_have_attribute("aria-selected", "true")
    await expect(c).to_have_attribute("aria-expanded", "true")

    # A file's path previews the file, in its folder.
    await go(files, "/tmp/deep/a/b/c/leaf.txt")
    preview = files.get_by_role("region", name="File preview")
    await expect(preview).to_contain_text("/tmp/deep/a/b/c/leaf.txt")
    await expect(preview.get_by_role("region", name="File content")).to_contain_text("leaf")
    await expect(item(c, "leaf.txt")).to_have_attribute("aria-selected", "true")
    await expect(files.get_by_label("Path")).to_have_value("/tmp/deep/a/b/c")


async def test_big_folder_shows_the_first_500(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    await run(
        platform,
        account,
        capsule["id"],
        "mkdir /tmp/many && cd /tmp/many && seq -f 'f%04g' 1 1234 | xargs touch"
        " && echo thousand > f1000",
    )
    files, tree = await loaded_tree(page)
    await go(files, "/tmp/many")
    many = item(tree, "many")
    await expect(many).to_have_attribute("aria-expanded", "true")
    children = many.get_by_role("group").get_by_role("treeitem")
    await expect(children).to_have_count(500)
    await expect(children.first).to_have_attribute("aria-label", "f0001")
    await expect(children.last).to_have_attribute("aria-label", "f0500")
    await expect(children.last).to_have_attribute("aria-setsize", "1234")
    await expect(many.get_by_role("note")).to_have_text("734 more…")
    await expect(item(many, "f0501")).to_have_count(0)

    # An entry past the cap is reachable by its path.
    await go(files, "/tmp/many/f1000")
    preview = files.get_by_role("region", name="File preview")
    await expect(preview).to_contain_text("/tmp/many/f1000")
    await expect(preview.get_by_role("region", name="File content")).to_contain_text("thousand")


async def test_keyboard_navigation(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    await run(
        platform,
        account,
        capsule["id"],
        "mkdir -p /tmp/kb/sub && echo inside > /tmp/kb/sub/inner.txt"
        " && echo hello > /tmp/kb/note.txt",
    )
    files, tree = await loaded_tree(page)
    crumbs = files.get_by_role("navigation", name="Breadcrumbs")
    await go(files, "/tmp/kb")
    kb = item(tree, "kb")
    await expect(kb).to_have_attribute("aria-expanded", "true")
    sub, note = item(kb, "sub"), item(kb, "note.txt")
    await expect(note).to_be_visible()

    # One item is in the tab order: the one last chosen.
    await expect(tree.locator('[role="treeitem"][tabindex="0"]')).to_have_count(1)
    await crumbs.get_by_role("button", name="kb").focus()
    await page.keyboard.press("Tab")
    await expect(kb).to_be_focused()

    await page.keyboard.press("ArrowLeft")  # closes
    await expect(kb).to_have_attribute("aria-expanded", "false")
    await page.keyboard.press("ArrowRight")  # opens
    await expect(kb).to_have_attribute("aria-expanded", "true")
    await page.keyboard.press("ArrowRight")  # into the first child
    await expect(sub).to_be_focused()
    await page.keyboard.press("ArrowRight")  # opens it, listing it
    await expect(sub).to_have_attribute("aria-expanded", "true")
    await expect(item(sub, "inner.txt")).to_be_visible()
    await expect(sub).to_be_focused()
    await page.keyboard.press("ArrowDown")
    await expect(item(sub, "inner.txt")).to_be_focused()
    await page.keyboard.press("ArrowLeft")  # a file: to its folder
    await expect(sub).to_be_focused()
    await page.keyboard.press("ArrowLeft")
    await expect(sub).to_have_attribute("aria-expanded", "false")
    await page.keyboard.press("ArrowDown")
    await expect(note).to_be_focused()
    await expect(tree.locator('[role="treeitem"][tabindex="0"]')).to_have_attribute(
        "aria-label", "note.txt"
    )

    await page.keyboard.press("Enter")
    preview = files.get_by_role("region", name="File preview")
    await expect(preview).to_contain_text("/tmp/kb/note.txt")
    await expect(preview.get_by_role("region", name="File content")).to_contain_text("hello")
    await expect(note).to_have_attribute("aria-selected", "true")

    await page.keyboard.press("ArrowUp")
    await page.keyboard.press("Enter")  # a folder: opens and becomes the current one
    await expect(files.get_by_label("Path")).to_have_value("/tmp/kb/sub")
    await expect(sub).to_have_attribute("aria-expanded", "true")
    await expect(sub).to_have_attribute("aria-selected", "true")
    await page.keyboard.press("Home")
    await expect(item(tree, "/")).to_be_focused()


async def test_symlinks_to_folders_open_like_folders(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    await run(
        platform,
        account,
        capsule["id"],
        "mkdir -p /tmp/ln/real && echo inside > /tmp/ln/real/in.txt && echo hi > /tmp/ln/f.txt"
        " && ln -s real /tmp/ln/dirlink && ln -s f.txt /tmp/ln/filelink"
        " && ln -s nowhere /tmp/ln/broken",
    )
    files, tree = await loaded_tree(page)
    await go(files, "/tmp/ln")
    ln = item(tree, "ln")
    dirlink, filelink, broken = item(ln, "dirlink"), item(ln, "filelink"), item(ln, "broken")
    await expect(dirlink).to_be_visible()
    preview = files.get_by_role("region", name="File preview")

    await open_folder(dirlink)
    await expect(dirlink).to_have_attribute("aria-expanded", "true")
    await expect(item(dirlink, "in.txt")).to_be_visible()
    await expect(files.get_by_label("Path")).to_have_value("/tmp/ln/dirlink")

    await filelink.click()
    await expect(preview).to_contain_text("/tmp/ln/filelink")
    await expect(preview.get_by_role("region", name="File content")).to_contain_text("hi")
    assert await filelink.get_attribute("aria-expanded") is None
    await expect(files.get_by_label("Path")).to_have_value("/tmp/ln/dirlink")

    # A broken link is tried quietly, then shown as a file that cannot be read.
    await broken.click()
    await expect(preview).to_contain_text("/tmp/ln/broken")
    await expect(tree.get_by_role("alert")).to_have_count(0)


async def test_unreadable_folder_keeps_the_tree(platform: Platform, signed_in: SignIn) -> None:
    """A folder that cannot be listed shows its error in place (here: removed after it was
    listed)."""
    page, account, capsule = await open_files(platform, signed_in)
    await run(
        platform,
        account,
        capsule["id"],
        "mkdir -p /tmp/err/gone /tmp/err/ok && touch /tmp/err/ok/x",
    )
    files, tree = await loaded_tree(page)
    await go(files, "/tmp/err")
    err = item(tree, "err")
    gone, ok = item(err, "gone"), item(err, "ok")
    await toggle(ok)
    await expect(item(ok, "x")).to_be_visible()

    await run(platform, account, capsule["id"], "rm -r /tmp/err/gone")
    await open_folder(gone)
    await expect(gone).to_have_attribute("aria-expanded", "true")
    alert = gone.get_by_role("alert")
    await expect(alert).to_contain_text("no such file")
    # Everything else stays; the current folder is not moved into the broken one.
    await expect(files.get_by_label("Path")).to_have_value("/tmp/err")
    await expect(item(ok, "x")).to_be_visible()
    await expect(item(tree, "etc")).to_be_visible()
    await expect(files.get_by_role("alert")).to_have_count(1)

    # Once it is back, a refresh lists it.
    await run(platform, account, capsule["id"], "mkdir /tmp/err/gone && touch /tmp/err/gone/back")
    await files.get_by_role("button", name="Refresh").click()
    await expect(item(gone, "back")).to_be_visible()
    await expect(files.get_by_role("alert")).to_have_count(0)
    await expect(item(ok, "x")).to_be_visible()
