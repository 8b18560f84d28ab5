"""Deleting your own account over the fake host agent: the capsules of the teams you own are
destroyed on the agent (running and paused alike) before the account goes; another user's
capsules are untouched; a capsule its host fails to destroy stops the deletion before anything
else changed, and it can be retried."""

from __future__ import annotations

import grpc
import httpx

from ..controlplane.helpers import assert_error
from .conftest import Stack
from .helpers import Account, capsule_status, make_capsule, new_account


async def _delete_me(api: httpx.AsyncClient, account: Account) -> httpx.Response:
    return await api.request(
        "DELETE", "/v1/me", json={"confirmation": account.email}, headers=account.jwt
    )


async def test_deleting_an_account_destroys_its_capsules(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    await new_account(api)  # the installation's first account: its platform admin
    alice = await new_account(api)
    bob = await new_account(api)
    running = (await make_capsule(api, alice))["id"]
    paused = (await make_capsule(api, alice))["id"]
    assert (await api.post(f"/v1/capsules/{paused}/pause", headers=alice.h)).status_code == 200
    bobs = (await make_capsule(api, bob))["id"]
    assert {running, paused, bobs} <= set(agent.sandboxes)

    resp = await _delete_me(api, alice)
    assert resp.status_code == 204, resp.text

    assert running not in agent.sandboxes and paused not in agent.sandboxes
    assert agent.calls.count("DestroySandbox") == 2
    assert await capsule_status(api, bob, bobs) == "running"
    assert_error(await api.get("/v1/capsules", headers=alice.h), 401, "unauthorized")
    assert_error(await api.get("/v1/capsules", headers=alice.jwt), 401, "unauthorized")


async def test_a_failed_destroy_stops_the_deletion(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    await new_account(api)
    alice = await new_account(api)
    capsule = (await make_capsule(api, alice))["id"]
    agent.faults.fail("DestroySandbox", grpc.StatusCode.INTERNAL, "disk on fire")
    assert_error(await _delete_me(api, alice), 502, "agent_error")
    # Nothing else happened: the account, its key and its capsule are all still there.
    assert await capsule_status(api, alice, capsule) == "running"
    assert (await api.get("/v1/me", headers=alice.jwt)).status_code == 200
    assert (await _delete_me(api, alice)).status_code == 204
    assert capsule not in agent.sandboxes
