"""The file browser of a capsule's detail page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

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


async def test_browse_into_etc_and_preview_hostname(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    hostname = await run(platform, account, capsule["id"], "cat /etc/hostname")
    files = page.get_by_role("region", name="Files")
    crumbs = files.get_by_role("navigation", name="Breadcrumbs")
    root = files.get_by_role("list", name="Directory /", exact=True)
    await expect(root.get_by_role("button", name="etc", exact=True)).to_be_visible(timeout=30_000)

    await root.get_by_role("button", name="etc", exact=True).click()
    etc = files.get_by_role("list", name="Directory /etc", exact=True)
    await expect(etc.get_by_role("button", name="hostname", exact=True)).to_be_visible()
    await expect(crumbs.get_by_role("button", name="etc")).to_have_attribute(
        "aria-current", "location"
    )
    await expect(files.get_by_label("Path")).to_have_value("/etc")

    await etc.get_by_role("button", name="hostname", exact=True).click()
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

    # Back up through the breadcrumbs, then by typing a path.
    await crumbs.get_by_role("button", name="/").click()
    await expect(root.get_by_role("button", name="etc", exact=True)).to_be_visible()
    await expect(files.get_by_label("Path")).to_have_value("/")
    await files.get_by_label("Path").fill("/etc")
    await files.get_by_role("button", name="Go").click()
    await expect(etc.get_by_role("button", name="hostname", exact=True)).to_be_visible()
    await etc.get_by_role("button", name="..", exact=True).click()
    await expect(root).to_be_visible()
    await files.get_by_label("Path").fill("/no/such/dir")
    await files.get_by_role("button", name="Go").click()
    await expect(files.get_by_role("alert")).to_be_visible()


async def test_large_and_long_files(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    await run(
        platform,
        account,
        capsule["id"],
        "head -c 11000000 /dev/zero > /tmp/big && seq 1 6000 > /tmp/lines.txt"
        " && printf 'a\\000b' > /tmp/blob.bin",
    )
    files = page.get_by_role("region", name="Files")
    root = files.get_by_role("list", name="Directory /", exact=True)
    await expect(root.get_by_role("button", name="tmp", exact=True)).to_be_visible(timeout=30_000)
    await files.get_by_label("Path").fill("/tmp")
    await files.get_by_role("button", name="Go").click()
    tmp = files.get_by_role("list", name="Directory /tmp", exact=True)
    preview = files.get_by_role("region", name="File preview")

    await tmp.get_by_role("button", name="big", exact=True).click()
    await expect(preview).to_contain_text("too large to preview")
    await expect(preview.get_by_role("button", name="Download file")).to_be_visible()
    await expect(preview.get_by_role("region", name="File content")).to_have_count(0)

    await tmp.get_by_role("button", name="lines.txt", exact=True).click()
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

    await tmp.get_by_role("button", name="blob.bin", exact=True).click()
    await expect(preview).to_contain_text("binary file")
    await expect(preview.get_by_role("region", name="File content")).to_have_count(0)


async def test_quick_clicks_keep_the_last_choice(platform: Platform, signed_in: SignIn) -> None:
    page, account, capsule = await open_files(platform, signed_in)
    await run(platform, account, capsule["id"], "seq 1 3 > /tmp/a.txt && echo b > /tmp/b.txt")
    files = page.get_by_role("region", name="Files")
    root = files.get_by_role("list", name="Directory /", exact=True)
    await expect(root.get_by_role("button", name="tmp", exact=True)).to_be_visible(timeout=30_000)
    # Two directories clicked in the same instant: the answer for the first is discarded.
    await page.evaluate(
        """() => {
            const list = document.querySelector('ul[aria-label="Directory /"]');
            list.querySelector('button[aria-label="etc"]').click();
            list.querySelector('button[aria-label="tmp"]').click();
        }"""
    )
    tmp = files.get_by_role("list", name="Directory /tmp", exact=True)
    await expect(tmp.get_by_role("button", name="a.txt", exact=True)).to_be_visible()
    await expect(files.get_by_label("Path")).to_have_value("/tmp")
    # Two files likewise: the preview is of the last one.
    await page.evaluate(
        """() => {
            const list = document.querySelector('ul[aria-label="Directory /tmp"]');
            list.querySelector('button[aria-label="a.txt"]').click();
            list.querySelector('button[aria-label="b.txt"]').click();
        }"""
    )
    preview = files.get_by_role("region", name="File preview")
    await expect(preview).to_contain_text("/tmp/b.txt")
    content = preview.get_by_role("region", name="File content")
    await expect(content.get_by_role("row")).to_have_count(1)
    await expect(content).to_contain_text("b")
    await page.wait_for_timeout(500)  # a late answer for a.txt must not replace it
    await expect(content.get_by_role("row")).to_have_count(1)
    await expect(files.get_by_role("list", name="Directory /tmp", exact=True)).to_be_visible()
