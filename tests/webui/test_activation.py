"""Email verification in the dashboard against a mocked API: the activation link's page
activates with the token from the fragment and signs in; a refused token (and a page opened
without one) offers to mail a new link; a signup that must be activated says to check the mail
instead of signing in; a login before activation says so and offers a new link."""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Page, expect

from .conftest import TEAM, TOKEN, MockApi, error_body
from .test_account import ME, recording


async def _stored(page: Page) -> Any:
    return json.loads(await page.evaluate("localStorage.getItem('wrenn.session')") or "null")


async def test_activation_link_signs_in(page: Page, api: MockApi) -> None:
    bodies: list[Any] = []
    session: dict[str, Any] = {"token": TOKEN, "user_id": "u-1", "team_id": TEAM["id"]}
    session |= {"email": ME["email"], "name": ME["name"]}
    api.on("POST", "/v1/auth/activate", recording({"json": session}, bodies))
    api.on("GET", "/v1/me", {"json": ME})
    api.on("GET", "/v1/capsules", {"json": []})
    await page.goto("/activate#token=tok-123")
    await expect(page).to_have_url("/dashboard/capsules")
    assert bodies == [{"token": "tok-123"}]
    stored = await _stored(page)
    assert stored["token"] == TOKEN
    assert stored["user"]["name"] == "Dana Scully"


async def _resend(page: Page, api: MockApi, email: str | None) -> list[Any]:
    bodies: list[Any] = []
    api.on("POST", "/v1/auth/activate/resend", recording({"status": 204}, bodies))
    form = page.get_by_role("form", name="Send a new activation link")
    if email is not None:
        await form.get_by_label("Email").fill(email)
    await form.get_by_role("button", name="Send a new activation link").click()
    await expect(
        page.get_by_role("status").filter(has_text="a new link is on its way")
    ).to_be_visible()
    return bodies


async def test_invalid_token_offers_a_new_link(page: Page, api: MockApi) -> None:
    api.on(
        "POST",
        "/v1/auth/activate",
        error_body(400, "invalid_token", "This activation link is invalid or has expired."),
    )
    await page.goto("/activate#token=stale")
    await expect(page.get_by_role("alert")).to_have_text(
        "This activation link is invalid or has expired."
    )
    # The token left the address bar and the history.
    assert "stale" not in page.url
    assert await _resend(page, api, "dana@example.com") == [{"email": "dana@example.com"}]
    assert await _stored(page) is None


async def test_page_without_a_token_asks_for_the_link(page: Page, api: MockApi) -> None:
    await page.goto("/activate")
    await expect(page.get_by_role("alert")).to_contain_text("needs the link")
    assert api.count("POST", "/v1/auth/activate") == 0
    assert await _resend(page, api, "dana@example.com") == [{"email": "dana@example.com"}]


async def test_signup_with_activation_required_says_check_the_mail(
    page: Page, api: MockApi
) -> None:
    created: dict[str, Any] = {
        "token": "",
        "user_id": "u-1",
        "team_id": "",
        "email": "dana@example.com",
    }
    created |= {
        "name": "Dana Scully",
        "message": "Account created. Please check your email to activate your account.",
        "activation_required": True,
    }
    api.on("POST", "/v1/auth/signup", {"status": 201, "json": created})
    await page.goto("/signup")
    await page.get_by_label("Name").fill("Dana Scully")
    await page.get_by_label("Email").fill("dana@example.com")
    await page.get_by_label("Password").fill("secret-password")
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_role("heading", name="Check your mail")).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text("dana@example.com")
    await expect(page).to_have_url("/signup")
    assert await _stored(page) is None
    assert api.count("GET", "/v1/me") == 0
    # The resend form comes prefilled with the address.
    assert await _resend(page, api, None) == [{"email": "dana@example.com"}]


async def test_login_before_activation_says_so_and_offers_a_new_link(
    page: Page, api: MockApi
) -> None:
    api.on(
        "POST",
        "/v1/auth/login",
        error_body(403, "account_not_activated", "Account is not activated."),
    )
    await page.goto("/login")
    login = page.locator("form").first
    await login.get_by_label("Email").fill("dana@example.com")
    await login.get_by_label("Password").fill("secret-password")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("alert")).to_contain_text("not activated yet")
    await expect(page).to_have_url("/login")
    assert await _resend(page, api, None) == [{"email": "dana@example.com"}]
