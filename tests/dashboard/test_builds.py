"""Template builds from the admin area: each one runs a real capsule on the host agent."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

from playwright.async_api import Locator, Page, expect

from .conftest import Platform, SignIn

BUILD_TIMEOUT = 120_000


async def submit_build(
    page: Page,
    name: str,
    recipe: str,
    *,
    memory: str | None = "512",
    skip: bool = True,
    archive: Path | None = None,
) -> Locator:
    await page.get_by_role("button", name="New template").click()
    dialog = page.get_by_role("dialog", name="New template")
    await dialog.get_by_role("textbox", name="Name", exact=True).fill(name)
    await dialog.get_by_role("textbox", name=re.compile("^Recipe")).fill(recipe)
    if memory:
        await dialog.get_by_label("Memory (MB)").fill(memory)
    if skip:
        await dialog.get_by_label(re.compile("Skip pre/post")).check()
    if archive:
        await dialog.get_by_label(re.compile("^Archive")).set_input_files(archive)
    await dialog.get_by_role("button", name="Start build").click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_role("tab", name=re.compile("^Builds"))).to_have_attribute(
        "aria-selected", "true"
    )
    return page.locator("tr[data-build]").filter(has_text=name)


async def test_a_build_succeeds_with_progress_and_logs(
    platform: Platform, signed_in: SignIn
) -> None:
    admin = await platform.signup("Walter Skinner")
    page = await signed_in(admin)
    await page.goto(platform.url + "/admin/templates")

    # The dialog highlights the recipe's keywords and checks the name.
    await page.get_by_role("button", name="New template").click()
    dialog = page.get_by_role("dialog", name="New template")
    await dialog.get_by_role("textbox", name="Name", exact=True).fill("-bad")
    await expect(dialog.get_by_role("button", name="Start build")).to_be_disabled()
    await dialog.get_by_role("textbox", name=re.compile("^Recipe")).fill("ENV A=1\nRUN true")
    steps = dialog.get_by_role("list", name="Recipe steps")
    await expect(steps.get_by_role("listitem")).to_have_text(["ENV A=1", "RUN true"])
    await expect(steps.locator(".kw")).to_have_text(["ENV", "RUN"])
    await expect(dialog.get_by_role("button", name="Copy recipe")).to_be_visible()
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()

    row = await submit_build(page, "hello-tpl", "RUN echo hello > /tmp/x")
    await expect(row.get_by_text("success", exact=True)).to_be_visible(timeout=BUILD_TIMEOUT)
    bar = row.get_by_role("progressbar", name="Progress of hello-tpl")
    total = await bar.get_attribute("aria-valuemax")
    assert total and int(total) >= 2  # the step and the template
    await expect(bar).to_have_attribute("aria-valuenow", total)
    await expect(row.get_by_role("button", name="Cancel")).to_have_count(0)

    builds = (await platform.api.get("/v1/admin/builds", headers=admin.headers)).json()
    assert builds[0]["name"] == "hello-tpl" and builds[0]["status"] == "success"
    assert builds[0]["memory_mb"] == 512 and builds[0]["skip_pre_post"] is True

    # The new build's logs are open; they fold and unfold.
    toggle = row.get_by_role("button", name="Hide logs")
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await toggle.click()
    logs = page.get_by_role("list", name="Steps of hello-tpl")
    await expect(logs).to_have_count(0)
    await row.get_by_role("button", name="Show logs").click()
    step = logs.get_by_role("listitem").filter(has_text="echo hello > /tmp/x")
    await expect(step).to_contain_text("RUN echo hello > /tmp/x")
    await expect(step).to_contain_text("ok")
    await expect(step).to_contain_text("exit code 0")
    await expect(logs.get_by_role("listitem").last).to_contain_text("TEMPLATE hello-tpl")

    # The template is listed, with its build's default user.
    await page.get_by_role("tab", name=re.compile("^Templates")).click()
    tpl = (
        page.get_by_role("table", name="Templates").get_by_role("row").filter(has_text="hello-tpl")
    )
    await expect(tpl).to_contain_text("platform")
    await expect(tpl).to_contain_text("wrenn-user")


async def test_a_failing_build_and_a_cancelled_one(platform: Platform, signed_in: SignIn) -> None:
    admin = await platform.signup("Walter Skinner")
    page = await signed_in(admin)
    await page.goto(platform.url + "/admin/templates?tab=builds")
    await expect(page.get_by_text("No builds yet")).to_be_visible()

    failing = await submit_build(page, "fails-tpl", "RUN exit 3")
    await expect(failing.get_by_text("failed", exact=True)).to_be_visible(timeout=BUILD_TIMEOUT)
    logs = page.locator("tr.logs-row").filter(
        has=page.get_by_role("list", name="Steps of fails-tpl")
    )
    await expect(logs.get_by_role("alert")).to_contain_text("exited with 3")
    step = logs.get_by_role("listitem").filter(has_text="RUN exit 3")
    await expect(step).to_contain_text("failed")
    await expect(step).to_contain_text("exit code 3")

    slow = await submit_build(page, "slow-tpl", "RUN sleep 300")
    await expect(slow.get_by_text("running", exact=True)).to_be_visible(timeout=BUILD_TIMEOUT)
    await slow.get_by_role("button", name="Cancel").click()
    await expect(slow.get_by_text("cancelled", exact=True)).to_be_visible(timeout=30_000)
    await expect(slow.get_by_role("button", name="Cancel")).to_have_count(0)
    builds = (await platform.api.get("/v1/admin/builds", headers=admin.headers)).json()
    assert {b["name"]: b["status"] for b in builds} == {
        "fails-tpl": "failed",
        "slow-tpl": "cancelled",
    }
    # A cancelled build produced no template.
    names = {
        t["name"]
        for t in (await platform.api.get("/v1/admin/templates", headers=admin.headers)).json()
    }
    assert "slow-tpl" not in names and "fails-tpl" not in names


async def test_a_build_with_an_archive_for_copy(
    platform: Platform, signed_in: SignIn, tmp_path: Path
) -> None:
    admin = await platform.signup("Walter Skinner")
    archive = tmp_path / "app.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"hello from the archive\n"
        info = tarfile.TarInfo("app/hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    page = await signed_in(admin)
    await page.goto(platform.url + "/admin/templates")
    row = await submit_build(
        page, "copy-tpl", "COPY app /srv/app\nRUN cat /srv/app/hello.txt", archive=archive
    )
    await expect(row.get_by_text("success", exact=True)).to_be_visible(timeout=BUILD_TIMEOUT)
    logs = page.get_by_role("list", name="Steps of copy-tpl")
    summary = page.locator("tr.logs-row").filter(has=logs)
    await expect(summary).to_contain_text("Archive uploaded")
    await expect(logs.get_by_role("listitem").nth(1)).to_contain_text("1 file(s) copied")
    step = logs.get_by_role("listitem").filter(has_text="RUN cat /srv/app/hello.txt")
    await expect(step.locator("pre")).to_have_text("hello from the archive")
    builds = (await platform.api.get("/v1/admin/builds", headers=admin.headers)).json()
    assert builds[0]["has_archive"] is True
