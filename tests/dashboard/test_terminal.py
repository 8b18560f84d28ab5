"""The Terminal tab of a capsule's page against a real capsule: a shell on the capsule's PTY,
typed into and read back in Chromium, reattached after a reload, and ended by `exit`."""

from __future__ import annotations

from playwright.async_api import expect

from .conftest import Platform, SignIn
from .test_capsules import new_capsule


async def test_a_command_typed_in_the_terminal_runs_in_the_capsule(
    platform: Platform, signed_in: SignIn
) -> None:
    account = await platform.signup()
    capsule = await new_capsule(platform, account)
    page = await signed_in(account)
    await page.goto(f"{platform.url}/dashboard/capsules/{capsule['id']}")
    await page.get_by_role("link", name="Terminal").click()
    status = page.get_by_role("status", name="Terminal status")
    await expect(status).to_contain_text("Connected pty-", timeout=30_000)
    tag = (await status.inner_text()).split()[-1]
    screen = page.locator(".xterm-rows")

    await page.locator(".xterm").click()
    # The shell computes the number: what is read back is its output, not the typed line.
    await page.keyboard.type("echo hello-$((6*7))")
    await page.keyboard.press("Enter")
    await expect(screen).to_contain_text("hello-42", timeout=30_000)

    # A reload reattaches to the same shell, whose recent output the server replays.
    await page.reload()
    await expect(status).to_contain_text(f"Connected {tag}", timeout=30_000)
    await expect(screen).to_contain_text("hello-42")

    await page.locator(".xterm").click()
    await page.keyboard.type("exit")
    await page.keyboard.press("Enter")
    await expect(status).to_contain_text("The shell ended (exit code 0)", timeout=30_000)
