"""The capsule pages: list and lifecycle, detail with metrics, team stats, templates."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from playwright.async_api import Locator, Page, expect
from sqlalchemy import update

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models.capsules import Sandbox

from .conftest import Account, Platform, SignIn


async def new_capsule(platform: Platform, account: Account, **spec: Any) -> dict[str, Any]:
    body = {"template": "minimal", "vcpus": 1, "memory_mb": 256, **spec}
    resp = await platform.api.post("/v1/capsules", json=body, headers=account.headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def capsule_status(platform: Platform, account: Account, capsule_id: str) -> str:
    resp = await platform.api.get(f"/v1/capsules/{capsule_id}", headers=account.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["status"]


def row(page: Page, capsule_id: str) -> Locator:
    return page.get_by_role("table", name="Capsules").get_by_role("row").filter(has_text=capsule_id)


async def test_create_pause_resume_destroy_from_the_list(
    platform: Platform, signed_in: SignIn
) -> None:
    account = await platform.signup()
    page = await signed_in(account)
    await page.goto(platform.url + "/dashboard/capsules")
    await expect(page.get_by_text("No capsules yet")).to_be_visible()
    await expect(page.get_by_role("link", name="Stats")).to_be_visible()

    await page.get_by_role("button", name="New capsule").click()
    dialog = page.get_by_role("dialog", name="New capsule")
    await expect(dialog.get_by_label("Template")).to_have_value("minimal")
    await dialog.get_by_label("vCPUs").fill("1")
    await dialog.get_by_label("Memory (MB)").fill("256")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog).to_be_hidden(timeout=120_000)

    listed = (await platform.api.get("/v1/capsules", headers=account.headers)).json()
    assert len(listed) == 1
    capsule = listed[0]
    assert (capsule["template"], capsule["vcpus"], capsule["memory_mb"]) == ("minimal", 1, 256)
    cid = capsule["id"]
    await expect(row(page, cid)).to_contain_text("running")
    await expect(row(page, cid)).to_contain_text("1 vCPU · 256 MB")
    await expect(page.get_by_text("1 running")).to_be_visible()
    await expect(row(page, cid).get_by_role("link", name=cid)).to_have_attribute(
        "href", f"/dashboard/capsules/{cid}"
    )

    await page.get_by_role("button", name=f"Pause {cid}").click()
    await expect(row(page, cid)).to_contain_text("paused", timeout=60_000)
    assert await capsule_status(platform, account, cid) == "paused"
    await expect(page.get_by_text("0 running")).to_be_visible()

    await page.get_by_role("button", name=f"Resume {cid}").click()
    await expect(row(page, cid)).to_contain_text("running", timeout=60_000)
    assert await capsule_status(platform, account, cid) == "running"

    await page.get_by_role("button", name=f"Destroy {cid}").click()
    confirm = page.get_by_role("dialog", name="Destroy capsule")
    await expect(confirm).to_contain_text(cid)
    await confirm.get_by_role("button", name="Destroy capsule").click()
    await expect(row(page, cid)).to_contain_text("stopped", timeout=60_000)
    assert await capsule_status(platform, account, cid) == "stopped"
    await expect(page.get_by_role("button", name=f"Destroy {cid}")).to_have_count(0)


async def test_list_follows_changes_made_elsewhere(platform: Platform, signed_in: SignIn) -> None:
    account = await platform.signup()
    page = await signed_in(account)
    await page.goto(platform.url + "/dashboard/capsules")
    await expect(page.get_by_text("No capsules yet")).to_be_visible()
    capsule = await new_capsule(platform, account)
    # The list polls: the capsule made through the API shows up without a reload.
    await expect(row(page, capsule["id"])).to_contain_text("running", timeout=15_000)


async def test_detail_page_shows_info_and_metrics(platform: Platform, signed_in: SignIn) -> None:
    account = await platform.signup()
    capsule = await new_capsule(platform, account, vcpus=2, memory_mb=512)
    cid = capsule["id"]
    page = await signed_in(account)
    await page.goto(platform.url + "/dashboard/capsules")
    await row(page, cid).get_by_role("link", name=cid).click()
    await expect(page).to_have_url(f"{platform.url}/dashboard/capsules/{cid}")

    info = page.get_by_role("region", name="Capsule info")
    await expect(info).to_contain_text(cid)
    await expect(info).to_contain_text("minimal")
    await expect(info).to_contain_text("2 vCPU · 512 MB")
    await expect(info.locator("[data-status]")).to_have_text("running")

    metrics = page.get_by_role("region", name="Metrics")
    for title in ("CPU %", "Memory (MB)", "Disk (MB)"):
        await expect(metrics.locator(f'canvas[aria-label="{title}"]')).to_be_visible()
    await expect(metrics.get_by_label("Range")).to_have_value("10m")

    # The agent samples the capsule: the API reports points and the charts get them.
    deadline = time.monotonic() + 90
    while True:
        resp = await platform.api.get(f"/v1/capsules/{cid}/metrics", headers=account.headers)
        assert resp.status_code == 200, resp.text
        if resp.json()["points"]:
            break
        assert time.monotonic() < deadline, "no metric points"
        await asyncio.sleep(1)
    await expect(page.get_by_test_id("metric-count")).not_to_have_text(
        re.compile(r"^\s*0 samples"), timeout=30_000
    )
    cpu = metrics.locator('canvas[aria-label="CPU %"]')
    await expect(cpu).not_to_have_attribute("data-points", "0", timeout=30_000)
    await metrics.get_by_label("Range").select_option("1h")
    await expect(cpu).not_to_have_attribute("data-points", "0")

    # Paused: stored samples are still shown, and the files need a running capsule.
    await page.get_by_role("button", name=f"Pause {cid}").click()
    await expect(info.locator("[data-status]")).to_have_text("paused", timeout=60_000)
    await expect(metrics).to_contain_text("showing its stored samples")
    await expect(
        page.get_by_text("Files can be browsed only while the capsule is running")
    ).to_be_visible()
    await expect(page.get_by_role("region", name="Files")).to_have_count(0)

    await page.get_by_role("button", name=f"Destroy {cid}").click()
    await (
        page.get_by_role("dialog", name="Destroy capsule")
        .get_by_role("button", name="Destroy capsule")
        .click()
    )
    await expect(page).to_have_url(platform.url + "/dashboard/capsules", timeout=60_000)
    assert await capsule_status(platform, account, cid) == "stopped"


async def test_stats_page_keeps_its_range_across_reload(
    platform: Platform, signed_in: SignIn
) -> None:
    account = await platform.signup()
    await new_capsule(platform, account, vcpus=2, memory_mb=512)
    page = await signed_in(account)
    await page.goto(platform.url + "/dashboard/capsules")
    await (
        page.get_by_role("navigation", name="Capsule views")
        .get_by_role("link", name="Stats")
        .click()
    )
    await expect(page).to_have_url(platform.url + "/dashboard/capsules/stats")
    ranges = page.get_by_role("group", name="Range")
    await expect(ranges.get_by_role("button", name="1h")).to_have_attribute("aria-pressed", "true")
    running = page.get_by_role("region", name="Running capsules")
    await expect(running.get_by_test_id("now")).to_have_text("1", timeout=30_000)
    vcpus = page.get_by_role("region", name="vCPUs reserved")
    await expect(vcpus.get_by_test_id("now")).to_have_text("2")
    await expect(page.locator('canvas[aria-label="Running capsules"]')).to_be_visible()
    await expect(page.locator('canvas[aria-label="Reserved vCPUs and memory"]')).to_be_visible()

    await ranges.get_by_role("button", name="24h").click()
    await expect(page).to_have_url(platform.url + "/dashboard/capsules/stats?range=24h")
    await page.reload()
    await expect(page).to_have_url(platform.url + "/dashboard/capsules/stats?range=24h")
    await expect(ranges.get_by_role("button", name="24h")).to_have_attribute("aria-pressed", "true")
    await expect(ranges.get_by_role("button", name="1h")).to_have_attribute("aria-pressed", "false")
    await expect(page.get_by_role("region", name="Memory reserved")).to_contain_text("512 MB")


async def test_templates_page(platform: Platform, signed_in: SignIn) -> None:
    account = await platform.signup()
    capsule = await new_capsule(platform, account)
    resp = await platform.api.post(
        "/v1/snapshots",
        json={"sandbox_id": capsule["id"], "name": "my-snap"},
        headers=account.headers,
    )
    assert resp.status_code == 201, resp.text
    page = await signed_in(account)
    await page.goto(platform.url + "/dashboard/templates")
    table = page.get_by_role("table", name="Templates")
    minimal = table.get_by_role("row").filter(has_text="minimal")
    await expect(minimal).to_contain_text("Platform")
    await expect(minimal.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)
    mine = table.get_by_role("row").filter(has_text="my-snap")
    await expect(mine).to_contain_text("Team snapshot")

    await mine.get_by_role("button", name="Delete my-snap").click()
    confirm = page.get_by_role("dialog", name="Delete template")
    await expect(confirm).to_contain_text("my-snap")
    await confirm.get_by_role("button", name="Delete template").click()
    await expect(mine).to_have_count(0, timeout=60_000)
    names = [
        t["name"] for t in (await platform.api.get("/v1/snapshots", headers=account.headers)).json()
    ]
    assert "my-snap" not in names and "minimal" in names


async def test_an_errored_capsule_shows_why(platform: Platform, signed_in: SignIn) -> None:
    account = await platform.signup()
    other = await new_capsule(platform, account)
    capsule = await new_capsule(platform, account)
    cid = capsule["id"]
    # As the reconciler records a sandbox the host's OOM killer took (error is final: it is
    # not reconciled again).
    async with platform.db.sessionmaker() as session, session.begin():
        await session.execute(
            update(Sandbox)
            .where(Sandbox.id == ids.SANDBOX.parse(cid))
            .values(status="error", status_reason="out of memory")
        )
    resp = await platform.api.get(f"/v1/capsules/{cid}", headers=account.headers)
    assert resp.json()["status_reason"] == "out of memory"

    page = await signed_in(account)
    await page.goto(platform.url + "/dashboard/capsules")
    errored = row(page, cid)
    await expect(errored.locator("[data-status]")).to_have_text("error")
    await expect(errored.locator("[data-status]")).to_have_attribute("title", "out of memory")
    await expect(errored.get_by_test_id("status-reason")).to_have_text("out of memory")
    # A capsule without a reason shows none.
    await expect(row(page, other["id"]).locator("[data-status]")).to_have_text("running")
    await expect(row(page, other["id"]).get_by_test_id("status-reason")).to_have_count(0)

    await errored.get_by_role("link", name=cid).click()
    await expect(page).to_have_url(f"{platform.url}/dashboard/capsules/{cid}")
    info = page.get_by_role("region", name="Capsule info")
    await expect(info.locator("[data-status]")).to_have_text("error")
    await expect(info.get_by_test_id("status-reason")).to_have_text("- out of memory")
    await expect(info).to_contain_text(re.compile(r"Status\s*error\s*- out of memory"))
