"""The dashboard and Swagger UI run under content security policies without 'unsafe-inline'
scripts: their own scripts run (pages load and work), an injected inline script does not, no
policy violation is reported, and /docs loads nothing from another origin."""

from __future__ import annotations

from playwright.async_api import BrowserContext, Page, expect

from .conftest import Platform, SignIn
from .test_capsules import new_capsule

# Every violation the page sees, and whether an injected inline script ran.
WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


async def _violations(page: Page) -> list[str]:
    found: list[str] = await page.evaluate("window.__violations")
    return found


async def test_the_dashboard_works_and_runs_no_injected_script(
    platform: Platform, signed_in: SignIn, context: BrowserContext
) -> None:
    await context.add_init_script(WATCH)
    account = await platform.signup()
    capsule = await new_capsule(platform, account)
    page = await signed_in(account)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)

    await page.goto(platform.url + "/dashboard/capsules")
    await expect(page.get_by_role("heading", name="Capsules", exact=False).first).to_be_visible()
    link = page.get_by_role("link", name=capsule["id"])
    await link.click()
    await expect(page.get_by_role("heading", name=capsule["id"])).to_be_visible()
    await page.goto(platform.url + "/dashboard/capsules/stats")  # charts (Chart.js)
    await expect(page.get_by_role("heading", name="Running capsules")).to_be_visible()
    assert await _violations(page) == []
    assert not [m for m in console if "Content Security Policy" in m]

    # What an XSS would try: an inline script put into the page. The policy stops it.
    ran = await page.evaluate(
        """() => new Promise((resolve) => {
            window.__injected = false;
            const s = document.createElement('script');
            s.textContent = 'window.__injected = true';
            document.body.appendChild(s);
            setTimeout(() => resolve(window.__injected), 200);
        })"""
    )
    assert ran is False
    # Reported once per policy: the header's and the build's <meta> one.
    violations = await _violations(page)
    assert violations and set(violations) == {"script-src-elem inline"}, violations


async def test_swagger_ui_loads_from_this_origin_only(
    platform: Platform, context: BrowserContext
) -> None:
    await context.add_init_script(WATCH)
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    await page.goto(platform.url + "/docs")
    await expect(page.get_by_role("heading", name="Wrenn API")).to_be_visible()
    await expect(page.get_by_text("/v1/auth/login").first).to_be_visible()
    assert await _violations(page) == []
    assert requested and all(url.startswith(platform.url + "/") for url in requested), requested
