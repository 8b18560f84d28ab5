"""The account page against a mocked API: renaming stores the new session the API answers;
changing the password signs in again with it (or, when that fails, leaves the user at the login
page, signed out); a wrong current password is said inline; deleting the account needs the email
typed, shows the API's refusal while the user owns a team with members, and signs out once done;
the linked providers are listed."""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Page, Route, expect

from .conftest import TEAM, USER, MockApi, _b64, error_body

ME = {
    "user_id": "u-1",
    "name": "Dana Scully",
    "email": "dana@example.com",
    "team_id": TEAM["id"],
    "role": "owner",
    "is_admin": False,
    "has_password": True,
    "providers": ["github"],
}


def _token(name: str) -> str:
    claims = {"sub": "u-1", "team_id": "t-1", "name": name, "exp": 4_000_000_000}
    return f"{_b64({'alg': 'HS256'})}.{_b64(claims)}.sig"


def recording(reply: dict[str, Any], bodies: list[Any]) -> Any:
    """A reply that also keeps the JSON body of each request."""

    async def handle(route: Route) -> None:
        bodies.append(route.request.post_data_json)
        status = reply.get("status", 200)
        body = None if status == 204 else json.dumps(reply.get("json"))
        await route.fulfill(status=status, content_type="application/json", body=body)

    return handle


async def _stored(page: Page) -> Any:
    return json.loads(await page.evaluate("localStorage.getItem('wrenn.session')") or "null")


async def _open(page: Page, api: MockApi, me: dict[str, Any] | None = None) -> None:
    api.on("GET", "/v1/me", {"json": me or ME})
    await page.goto("/dashboard/account")
    await expect(page.get_by_role("form", name="Change name")).to_be_visible()


async def test_linked_providers_are_listed(signed_in: Page, api: MockApi) -> None:
    await _open(signed_in, api)
    await expect(signed_in.get_by_test_id("providers")).to_have_text("GitHub")
    await _open(signed_in, api, {**ME, "providers": []})
    await expect(signed_in.get_by_test_id("providers")).to_contain_text("None")


async def test_rename_stores_the_new_session(signed_in: Page, api: MockApi) -> None:
    page = signed_in
    new_token = _token("Fox Mulder")
    bodies: list[Any] = []
    answer: dict[str, Any] = {"token": new_token, "user_id": "u-1", "team_id": "t-1"}
    answer |= {"email": USER["email"], "name": "Fox Mulder"}
    api.on("PATCH", "/v1/me", recording({"json": answer}, bodies))
    await _open(page, api)
    form = page.get_by_role("form", name="Change name")
    await form.get_by_label("Display name").fill("  Fox Mulder ")
    await form.get_by_role("button", name="Save name").click()
    await expect(page.locator(".who strong")).to_have_text("Fox Mulder")
    assert bodies == [{"name": "Fox Mulder"}]
    stored = await _stored(page)
    assert stored["token"] == new_token
    assert stored["user"]["name"] == "Fox Mulder"
    assert stored["user"]["role"] == "owner"


async def test_rename_refused_is_shown_inline(signed_in: Page, api: MockApi) -> None:
    page = signed_in
    api.on("PATCH", "/v1/me", error_body(400, "invalid_request", "name: must not be blank"))
    await _open(page, api)
    form = page.get_by_role("form", name="Change name")
    await form.get_by_label("Display name").fill("x")
    await form.get_by_role("button", name="Save name").click()
    await expect(form.get_by_role("alert")).to_have_text("name: must not be blank")
    assert (await _stored(page))["token"] != _token("x")


async def _change_password(page: Page) -> None:
    form = page.get_by_role("form", name="Change password")
    await form.get_by_label("Current password").fill("old-password")
    await form.get_by_label("New password", exact=True).fill("new-password-1")
    await form.get_by_label("Repeat the new password").fill("new-password-1")
    await form.get_by_role("button", name="Change password").click()


async def test_wrong_current_password_is_said_and_the_session_stays(
    signed_in: Page, api: MockApi
) -> None:
    page = signed_in
    api.on("POST", "/v1/me/password", error_body(401, "wrong_password", "wrong password"))
    await _open(page, api)
    await _change_password(page)
    await expect(page.get_by_role("alert")).to_have_text("The current password is wrong.")
    await expect(page).to_have_url("/dashboard/account")
    assert (await _stored(page))["token"]


async def test_password_change_signs_in_again_with_the_new_one(
    signed_in: Page, api: MockApi
) -> None:
    page = signed_in
    changes: list[Any] = []
    logins: list[Any] = []
    new_token = _token("Dana Scully")
    api.on("POST", "/v1/me/password", recording({"status": 204}, changes))
    login: dict[str, Any] = {"token": new_token, "user_id": "u-1", "team_id": "t-1"}
    login |= {"email": USER["email"], "name": USER["name"]}
    api.on("POST", "/v1/auth/login", recording({"json": login}, logins))
    await _open(page, api)
    await _change_password(page)
    await expect(page.get_by_role("status").filter(has_text="Password changed")).to_be_visible()
    assert changes == [{"current_password": "old-password", "new_password": "new-password-1"}]
    assert logins == [{"email": "dana@example.com", "password": "new-password-1"}]
    assert (await _stored(page))["token"] == new_token
    await expect(page).to_have_url("/dashboard/account")


async def test_password_change_then_back_at_login_when_signing_in_fails(
    signed_in: Page, api: MockApi
) -> None:
    page = signed_in
    api.on("POST", "/v1/me/password", {"status": 204})
    api.on("POST", "/v1/auth/login", error_body(429, "rate_limited", "Too many requests."))
    await _open(page, api)
    await _change_password(page)
    await expect(page).to_have_url("/login")
    await expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    assert await _stored(page) is None


async def test_delete_needs_the_email_shows_a_refusal_and_signs_out(
    signed_in: Page, api: MockApi
) -> None:
    page = signed_in
    bodies: list[Any] = []
    refusal = error_body(
        409, "owns_team_with_members", "You own a team that has other members: Dana's team."
    )
    api.on("DELETE", "/v1/me", recording(refusal, bodies))
    await _open(page, api)
    await page.get_by_role("button", name="Delete account…").click()
    dialog = page.get_by_role("dialog", name="Delete your account")
    confirm = dialog.get_by_role("button", name="Delete my account")
    await expect(confirm).to_be_disabled()
    await dialog.get_by_label("Email").fill("someone@else.com")
    await expect(confirm).to_be_disabled()
    await dialog.get_by_label("Email").fill("Dana@Example.com")
    await confirm.click()
    await expect(dialog.get_by_role("alert")).to_contain_text("You own a team that has other")
    await expect(dialog.get_by_role("alert")).to_contain_text("remove its members first")
    await expect(page).to_have_url("/dashboard/account")
    assert (await _stored(page))["token"]

    api.on("DELETE", "/v1/me", recording({"status": 204}, bodies))
    await confirm.click()
    await expect(page).to_have_url("/login")
    assert await _stored(page) is None
    assert bodies == [{"confirmation": "Dana@Example.com"}] * 2
