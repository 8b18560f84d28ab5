"""Signing up, in and out through the dashboard's own pages."""

from __future__ import annotations

from playwright.async_api import BrowserContext, expect

from ..controlplane.helpers import PASSWORD
from .conftest import Platform


async def test_signup_login_and_sign_out(platform: Platform, context: BrowserContext) -> None:
    page = await context.new_page()
    await page.goto(platform.url + "/")
    await expect(page).to_have_url(platform.url + "/login")
    await page.get_by_role("link", name="Create an account").click()
    await page.get_by_label("Name").fill("Fox Mulder")
    await page.get_by_label("Email").fill("fox@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page).to_have_url(platform.url + "/dashboard/capsules")
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_text("Fox Mulder", exact=True)).to_be_visible()
    # The first account of a platform is its admin: the admin area is offered.
    await expect(nav.get_by_role("link", name="Admin area")).to_be_visible()

    await nav.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(platform.url + "/login")
    await page.get_by_label("Email").fill("fox@example.com")
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("invalid")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(platform.url + "/dashboard/capsules")


async def test_pages_need_a_session_and_api_paths_stay_json(
    platform: Platform, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.goto(platform.url + "/dashboard/team")
    await expect(page).to_have_url(platform.url + "/login")
    resp = await platform.api.get("/v1/nope")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    shell = await platform.api.get("/dashboard/anything")
    assert shell.status_code == 200 and "text/html" in shell.headers["content-type"]
