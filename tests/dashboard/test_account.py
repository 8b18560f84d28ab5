"""Accounts in the dashboard, in real Chromium: the signup setting on the signed-out pages, a
password reset through a mail delivered by a real SMTP server on this machine, changing a
password, and an admin adding, inviting and deactivating people.

The control plane runs without a host agent: nothing here touches capsules.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect
from pydantic import SecretStr

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.settings import Settings

from ..controlplane.helpers import PASSWORD
from ..mailserver import MailServer, mail_server
from .conftest import BUILD, serving

NEW_PASSWORD = "another fine passphrase"


@dataclass
class ControlPlane:
    url: str
    api: httpx.AsyncClient

    async def signup(self, email: str, name: str = "Dana Scully") -> dict[str, str]:
        resp = await self.api.post(
            "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": name}
        )
        assert resp.status_code == 201, resp.text
        body: dict[str, str] = resp.json()
        return body


@contextlib.asynccontextmanager
async def control_plane(data_dir: Path, **settings: Any) -> AsyncIterator[ControlPlane]:
    """The control plane with the built dashboard on a real port. With SMTP settings, its
    mailed links point at that port (the public URL, known once it serves)."""
    if "smtp_host" in settings:
        settings.setdefault("public_url", "http://not-served-yet.invalid")
    config = Settings(
        data_dir=data_dir,
        jwt_secret=SecretStr("dashboard-account-secret-" + "z" * 32),
        agent_address="",
        dashboard_dir=BUILD,
        **settings,
    )
    app = create_app(config)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        if config.smtp_host:
            app.state.settings = config.model_copy(update={"public_url": url})
        yield ControlPlane(url, client)


@pytest.fixture(scope="module")
def smtp() -> Iterator[MailServer]:
    with mail_server() as server:
        yield server


async def open_signed_in(context: BrowserContext, cp: ControlPlane, token: str) -> Page:
    me = (await cp.api.get("/v1/me", headers={"Authorization": f"Bearer {token}"})).json()
    user = {k: me[k] for k in ("user_id", "name", "email", "team_id", "role", "is_admin")}
    saved = json.dumps({"token": token, "user": user})
    await context.add_init_script(
        f"localStorage.getItem('wrenn.session') === null && "
        f"localStorage.setItem('wrenn.session', {json.dumps(saved)})"
    )
    return await context.new_page()


async def settled(page: Page, url: str) -> None:
    """`url` loaded, once it has shown what the API says about signup."""
    async with page.expect_response(lambda r: r.url.endswith("/v1/auth/options")) as answer:
        await page.goto(url)
    await (await answer.value).finished()
    await page.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 100)))")


async def test_closed_signup_offers_no_signup(tmp_path: Path, context: BrowserContext) -> None:
    page = await context.new_page()
    async with control_plane(tmp_path / "cp", signup="closed") as cp:
        await settled(page, cp.url + "/login")
        await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        await expect(page.get_by_role("link", name="Create an account")).to_have_count(0)
        await expect(page.get_by_role("link", name="Forgot your password?")).to_have_count(0)
        await settled(page, cp.url + "/signup")
        await expect(page.get_by_role("heading")).to_have_text("Signup is not open")
        await expect(page.get_by_role("status")).to_contain_text("added by an administrator")
        await expect(page.get_by_role("button", name="Sign up")).to_have_count(0)


async def test_password_reset_through_the_mailed_link(
    tmp_path: Path, context: BrowserContext, smtp: MailServer
) -> None:
    smtp.clear()
    async with control_plane(tmp_path / "cp", signup="open", **smtp.settings()) as cp:
        scully = await cp.signup("scully@example.com")
        page = await context.new_page()
        await settled(page, cp.url + "/login")
        await page.get_by_role("link", name="Forgot your password?").click()
        await expect(page).to_have_url(cp.url + "/forgot-password")
        await page.get_by_label("Email").fill("scully@example.com")
        await page.get_by_role("button", name="Send the link").click()
        await expect(page.get_by_role("status")).to_contain_text("is on its way")

        message = await smtp.wait_for("scully@example.com")
        link = message.link(r"/reset-password#token=")
        assert link.startswith(cp.url + "/reset-password#token=")
        await page.goto(link)
        # The token left the address bar at once.
        await expect(page).to_have_url(cp.url + "/reset-password")
        await page.get_by_label("New password").fill(NEW_PASSWORD)
        await page.get_by_label("Repeat it").fill(NEW_PASSWORD)
        await page.get_by_role("button", name="Set the password").click()
        await expect(page.get_by_role("status")).to_contain_text("Sign in with your new password")
        # Reset signs nobody in; the old session is over.
        assert await page.evaluate("localStorage.getItem('wrenn.session')") is None
        old = await cp.api.get("/v1/me", headers={"Authorization": f"Bearer {scully['token']}"})
        assert old.status_code == 401

        await page.get_by_role("link", name="Sign in").click()
        await page.get_by_label("Email").fill("scully@example.com")
        await page.get_by_label("Password").fill(NEW_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(cp.url + "/dashboard/capsules")

        # The link works once.
        await page.goto(link)
        await page.get_by_label("New password").fill("yet another passphrase")
        await page.get_by_label("Repeat it").fill("yet another passphrase")
        await page.get_by_role("button", name="Set the password").click()
        await expect(page.get_by_role("alert")).to_contain_text("not valid")


async def test_change_password_on_the_account_page(tmp_path: Path, context: BrowserContext) -> None:
    async with control_plane(tmp_path / "cp", signup="open") as cp:
        scully = await cp.signup("scully@example.com", "Dana Scully")
        other_device = scully["token"]
        page = await open_signed_in(context, cp, scully["token"])
        await page.goto(cp.url + "/dashboard/capsules")
        nav = page.get_by_role("navigation", name="Main")
        await nav.get_by_role("link", name="Account").click()
        await expect(page).to_have_url(cp.url + "/dashboard/account")
        form = page.get_by_role("form", name="Change password")

        await form.get_by_label("Current password").fill("not my password")
        await form.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        await form.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
        await form.get_by_role("button", name="Change password").click()
        await expect(form.get_by_role("alert")).to_have_text("The current password is wrong.")
        # Still signed in.
        await expect(page).to_have_url(cp.url + "/dashboard/account")

        await form.get_by_label("Current password").fill(PASSWORD)
        await form.get_by_role("button", name="Change password").click()
        await expect(page.get_by_text("your other sessions have ended")).to_be_visible()
        await expect(nav.get_by_text("Dana Scully", exact=True)).to_be_visible()
        saved = json.loads(await page.evaluate("localStorage.getItem('wrenn.session')"))
        assert saved["token"] != other_device
        me = await cp.api.get("/v1/me", headers={"Authorization": f"Bearer {saved['token']}"})
        assert me.status_code == 200
        stale = await cp.api.get("/v1/me", headers={"Authorization": f"Bearer {other_device}"})
        assert stale.status_code == 401
        # The page keeps working with the new session.
        await nav.get_by_role("link", name="API keys").click()
        await expect(page.get_by_role("heading", name="API keys")).to_be_visible()


async def test_admin_adds_invites_and_deactivates(
    tmp_path: Path, context: BrowserContext, browser: Any
) -> None:
    async with control_plane(tmp_path / "cp", signup="open") as first:
        admin = await first.signup("skinner@example.com", "Walter Skinner")
    async with control_plane(tmp_path / "cp", signup="invite") as cp:
        page = await open_signed_in(context, cp, admin["token"])
        await page.goto(cp.url + "/admin/users")
        await expect(page.get_by_text("People sign up with an invitation")).to_be_visible()

        # Add a user; the generated password is shown once and works.
        await page.get_by_role("button", name="Add user").click()
        dialog = page.get_by_role("dialog", name="Add user")
        await dialog.get_by_label("Name").fill("Monica Reyes")
        await dialog.get_by_label("Email").fill("reyes@example.com")
        await dialog.get_by_role("button", name="Add user").click()
        shown = page.get_by_role("dialog", name="User added")
        password = await shown.get_by_label("Password").input_value()
        assert len(password) >= 16
        await shown.get_by_role("button", name="Done").click()
        reyes = await cp.api.post(
            "/v1/auth/login", json={"email": "reyes@example.com", "password": password}
        )
        assert reyes.status_code == 200
        users = page.get_by_role("table", name="Users")
        row = users.get_by_role("row").filter(has_text="reyes@example.com")
        await expect(row.get_by_test_id("status")).to_have_text("active")

        # Deactivate her: her session ends.
        await row.get_by_role("button", name="Deactivate").click()
        confirm = page.get_by_role("dialog", name="Deactivate reyes@example.com")
        await confirm.get_by_role("button", name="Deactivate").click()
        await expect(row.get_by_test_id("status")).to_have_text("deactivated")
        headers = {"Authorization": f"Bearer {reyes.json()['token']}"}
        assert (await cp.api.get("/v1/me", headers=headers)).status_code == 401
        await row.get_by_role("button", name="Reactivate").click()
        confirm = page.get_by_role("dialog", name="Reactivate reyes@example.com")
        await confirm.get_by_role("button", name="Reactivate").click()
        await expect(row.get_by_test_id("status")).to_have_text("active")
        await expect(row.get_by_role("button", name="Deactivate")).to_be_visible()
        # No button to deactivate oneself.
        own = users.get_by_role("row").filter(has_text="skinner@example.com")
        await expect(own.get_by_role("button")).to_have_count(0)

        # Invite someone; the link signs them up (in a browser of their own).
        await page.get_by_role("button", name="Invite").click()
        invite = page.get_by_role("dialog", name="Invite someone")
        await invite.get_by_label("Email").fill("doggett@example.com")
        await invite.get_by_role("button", name="Invite").click()
        created = page.get_by_role("dialog", name="Invitation created")
        link = await created.get_by_label("Signup link").input_value()
        assert link.startswith(cp.url + "/signup#")
        await created.get_by_role("button", name="Done").click()
        pending = page.get_by_role("table", name="Pending invitations")
        await expect(pending).to_contain_text("doggett@example.com")

        guest_context = await browser.new_context()
        try:
            guest = await guest_context.new_page()
            await guest.goto(link)
            await expect(guest).to_have_url(cp.url + "/signup")
            email = guest.get_by_label("Email")
            await expect(email).to_have_value("doggett@example.com")
            await guest.get_by_label("Name").fill("John Doggett")
            await guest.get_by_label("Password").fill(PASSWORD)
            await guest.get_by_role("button", name="Sign up").click()
            await expect(guest).to_have_url(cp.url + "/dashboard/capsules")
        finally:
            await guest_context.close()
        await page.reload()
        await expect(page.get_by_role("table", name="Pending invitations")).to_have_count(0)
        await expect(users.get_by_role("row").filter(has_text="doggett@example.com")).to_have_count(
            1
        )
