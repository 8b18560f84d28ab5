"""The team page's parking section against a mocked API: an owner sees the team's policy, changes
it and saves it (the body the API gets); a member sees it without the means to change it."""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Page, Route, expect

from .conftest import TEAM, USER, MockApi, error_body
from .test_capsules import TEMPLATES, capsule

PARKING = "/v1/teams/t-1/parking"


def _team_page(api: MockApi, role: str) -> None:
    member = {"user_id": USER["user_id"], "name": USER["name"], "email": USER["email"]}
    detail = {"team": TEAM, "members": [{**member, "role": role, "joined_at": TEAM["created_at"]}]}
    api.on("GET", "/v1/teams/t-1", {"json": detail})
    api.on("GET", "/v1/teams/t-1/quotas", error_body(404, "not_found", "no quotas here"))
    api.on("GET", PARKING, {"json": {"idle_sec": 0, "auto_resume": False}})


async def test_an_owner_sets_the_parking_policy(signed_in: Page, api: MockApi) -> None:
    _team_page(api, "owner")
    sent: list[dict[str, Any]] = []

    async def put(route: Route) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        await route.fulfill(status=200, json=sent[-1])

    api.on("PUT", PARKING, put)
    await signed_in.goto("/dashboard/team")
    form = signed_in.get_by_role("form", name="Parking policy")
    idle = form.get_by_label("Pause idle capsules after (seconds)")
    await expect(idle).to_have_value("0")
    save = form.get_by_role("button", name="Apply")
    await expect(save).to_be_disabled()  # nothing changed yet
    await idle.fill("900")
    await form.get_by_label("Resume a paused capsule on the next request").check()
    await save.click()
    await expect(
        signed_in.get_by_role("status").filter(has_text="Parking policy saved")
    ).to_be_visible()
    assert sent == [{"idle_sec": 900, "auto_resume": True}]
    await expect(save).to_be_disabled()


async def test_a_member_sees_it_read_only(signed_in: Page, api: MockApi) -> None:
    _team_page(api, "member")
    api.on("GET", PARKING, {"json": {"idle_sec": 300, "auto_resume": True}})
    await signed_in.goto("/dashboard/team")
    form = signed_in.get_by_role("form", name="Parking policy")
    idle = form.get_by_label("Pause idle capsules after (seconds)")
    await expect(idle).to_have_value("300")
    await expect(idle).to_be_disabled()
    await expect(form.get_by_label("Resume a paused capsule on the next request")).to_be_checked()
    await expect(form.get_by_role("button", name="Apply")).to_have_count(0)
    assert api.count("PUT", PARKING) == 0


async def test_a_capsule_made_without_a_timeout_leaves_it_to_the_team(
    signed_in: Page, api: MockApi
) -> None:
    """The create dialog's timeout starts empty and is then left out of the body, so the API
    applies the team's parking policy (a typed 0 would mean never pause)."""
    sent: list[dict[str, Any]] = []
    made = {**capsule("cl-new"), "timeout_sec": 600, "auto_resume": True}

    async def create(route: Route) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        await route.fulfill(status=201, json=made)

    api.on("GET", "/v1/capsules", {"json": [capsule("cl-aaa")]})
    api.on("GET", "/v1/snapshots", {"json": TEMPLATES})
    api.on("POST", "/v1/capsules", create)
    await signed_in.goto("/dashboard/capsules")
    await signed_in.get_by_role("button", name="New capsule").click()
    dialog = signed_in.get_by_role("dialog", name="New capsule")
    await expect(dialog.get_by_label("Timeout (seconds)")).to_have_value("")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog).to_be_hidden()
    assert sent == [{"template": "minimal", "vcpus": 1, "memory_mb": 512}]
