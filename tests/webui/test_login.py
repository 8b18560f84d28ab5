"""The login page shows the API's refusal inline, and signs in when the API accepts."""

from __future__ import annotations

import json

from playwright.async_api import Page, expect

from .conftest import TEAM, TOKEN, MockApi, error_body


async def _submit(page: Page, email: str, password: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in", exact=True).click()


async def test_wrong_password_is_shown_inline(page: Page, api: MockApi) -> None:
    api.on(
        "POST",
        "/v1/auth/login",
        error_body(401, "invalid_credentials", "Email or password is invalid."),
    )
    await page.goto("/login")
    await _submit(page, "dana@example.com", "wrong")
    await expect(page.get_by_role("alert")).to_have_text("Email or password is invalid.")
    await expect(page).to_have_url("/login")
    assert api.count("POST", "/v1/auth/login") == 1


async def test_too_many_attempts_reads_as_such(page: Page, api: MockApi) -> None:
    api.on("POST", "/v1/auth/login", error_body(429, "rate_limited", "Too many requests."))
    await page.goto("/login")
    await _submit(page, "dana@example.com", "wrong")
    await expect(page.get_by_role("alert")).to_contain_text("Too many failed attempts")


async def test_unreachable_api_is_said_so(page: Page, api: MockApi) -> None:
    api.on("POST", "/v1/auth/login", {"abort": True})
    await page.goto("/login")
    await _submit(page, "dana@example.com", "secret-password")
    await expect(page.get_by_role("alert")).to_have_text("The control plane cannot be reached.")


async def test_accepted_login_opens_the_capsules(page: Page, api: MockApi) -> None:
    api.on("POST", "/v1/auth/login", {"json": {"token": TOKEN, "user_id": "u-1", "team_id": "t-1"}})
    me = {
        "user_id": "u-1",
        "name": "Dana Scully",
        "email": "dana@example.com",
        "team_id": TEAM["id"],
        "role": "owner",
        "is_admin": False,
        "has_password": True,
        "providers": [],
    }
    api.on("GET", "/v1/me", {"json": me})
    api.on("GET", "/v1/capsules", {"json": []})
    await page.goto("/login")
    await _submit(page, "dana@example.com", "secret-password")
    await expect(page).to_have_url("/dashboard/capsules")
    await expect(page.get_by_text("No capsules yet")).to_be_visible()
    stored = json.loads(await page.evaluate("localStorage.getItem('wrenn.session')"))
    assert stored["token"] == TOKEN
    assert stored["user"]["name"] == "Dana Scully"
