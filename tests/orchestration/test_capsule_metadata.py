"""A capsule's `metadata` over the fake host agent: the creator's labels checked before anything
is made, the versions the agent reports added under the platform's keys (which no label can
take), shown wherever the capsule is (get, list, events, the snapshot taken from it), and the
list's `?metadata=key:value` filter next to `?status=`. Also the templates' wire fields as the
published SDK reads them."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from wrenn_server.controlplane.db.models import Sandbox

from ..controlplane.helpers import assert_error
from ..fakeagent.sandbox import VERSIONS
from .conftest import Stack, StartApp
from .helpers import Account, make_capsule, new_account
from .test_events import sdk as sdk  # the published SDK, as a fixture
from .test_events import served, stream

LABELS = {"env": "prod", "owner.team": "data-eng", "Run_2": "café: ☕ x"}


async def _ids(stack: Stack, who: Account, **params: Any) -> list[str]:
    resp = await stack.client.get("/v1/capsules", params=params, headers=who.h)
    assert resp.status_code == 200, resp.text
    return [c["id"] for c in resp.json()]


async def test_labels_and_versions_everywhere_the_capsule_is(start_app: StartApp) -> None:
    async with start_app() as stack, served(stack.app) as url:
        ada = await new_account(stack.client)
        async with stream(url, ada.h) as events:
            capsule = await make_capsule(stack.client, ada, metadata=LABELS)
            assert capsule["metadata"] == {**LABELS, **VERSIONS}
            (created,) = await events.capsule_events(capsule["id"], 1)
            assert created.data["sandbox"]["metadata"] == {**LABELS, **VERSIONS}
        got = await stack.client.get(f"/v1/capsules/{capsule['id']}", headers=ada.h)
        assert got.json()["metadata"] == {**LABELS, **VERSIONS}
        listed = await stack.client.get("/v1/capsules", headers=ada.h)
        assert [c["metadata"] for c in listed.json()] == [{**LABELS, **VERSIONS}]
        # Without labels: the platform's keys only.
        bare = await make_capsule(stack.client, ada)
        assert bare["metadata"] == VERSIONS


async def test_resume_reports_the_versions_of_now_and_keeps_the_labels(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    ada = await new_account(api)
    capsule = await make_capsule(api, ada, metadata={"env": "prod"})
    cid = capsule["id"]
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=ada.h)).status_code == 200
    # The host's agent was updated while the capsule slept; it also names a key of no version,
    # which must not pass for (or replace) a label.
    agent.versions = {**VERSIONS, "agent_version": "0.2.0", "env": "hijacked", "extra": "x"}
    resumed = await api.post(f"/v1/capsules/{cid}/resume", headers=ada.h)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["metadata"] == {"env": "prod", **VERSIONS, "agent_version": "0.2.0"}


async def test_bad_labels_are_refused_before_anything_is_made(stack: Stack) -> None:
    api, agent, db = stack.client, stack.agent, stack.db
    ada = await new_account(api)
    too_many = {f"k{i}": "v" for i in range(21)}
    at_most = {f"k{i}": "v" * 64 for i in range(20)}
    refused: list[tuple[Any, str]] = [
        (too_many, "at most 20"),
        ({"": "v"}, "letters, digits"),
        ({"-lead": "v"}, "letters, digits"),
        ({"a b": "v"}, "letters, digits"),
        ({"k/v": "v"}, "letters, digits"),
        ({"k" * 65: "v"}, "1-64 characters"),
        ({"k": "v" * 65}, "at most 64 printable"),
        ({"k": "line\nbreak"}, "at most 64 printable"),
        ({"vmm_version": "mine"}, "set by the platform"),
        ({"kernel_version": "6.1"}, "set by the platform"),
        ({"envd_version": "9"}, "set by the platform"),
        ({"agent_version": "9"}, "set by the platform"),
        ({"k": 1}, "string"),
        (["k", "v"], "dict"),
    ]
    for metadata, said in refused:
        resp = await api.post("/v1/capsules", json={"metadata": metadata}, headers=ada.h)
        assert_error(resp, 400, "invalid_request")
        assert said in resp.json()["error"]["message"], (metadata, resp.text)
    assert agent.calls == []
    async with db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Sandbox)) == 0
    # The bounds themselves are fine.
    made = await make_capsule(api, ada, metadata={**at_most, "k0": "v" * 64})
    assert {k: v for k, v in made["metadata"].items() if k.startswith("k")} == at_most
    assert (await make_capsule(api, ada, metadata={}))["metadata"] == VERSIONS


async def test_list_filters_by_metadata_with_or_without_status(stack: Stack) -> None:
    api = stack.client
    ada, bob = await new_account(api), await new_account(api)
    prod = (await make_capsule(api, ada, metadata={"env": "prod", "owner": "ci"}))["id"]
    dev = (await make_capsule(api, ada, metadata={"env": "dev", "owner": "ci"}))["id"]
    url = (await make_capsule(api, ada, metadata={"link": "http://x:8080/a"}))["id"]
    await make_capsule(api, bob, metadata={"env": "prod"})

    assert await _ids(stack, ada, metadata="env:prod") == [prod]
    assert await _ids(stack, ada, metadata=["env:prod", "owner:ci"]) == [prod]
    assert await _ids(stack, ada, metadata="owner:ci") == [dev, prod]
    assert await _ids(stack, ada, metadata=["env:dev", "owner:cd"]) == []
    assert await _ids(stack, ada, metadata="env:") == []
    # The value is everything after the first colon.
    assert await _ids(stack, ada, metadata="link:http://x:8080/a") == [url]
    # The platform's keys filter too.
    every = await _ids(stack, ada, metadata=f"envd_version:{VERSIONS['envd_version']}")
    assert every == [url, dev, prod]
    assert await _ids(stack, ada, metadata="envd_version:0.0.0") == []

    # With ?status=: a stopped capsule is left out unless asked for, filtered all the same.
    assert (await api.delete(f"/v1/capsules/{dev}", headers=ada.h)).status_code == 204
    assert await _ids(stack, ada, metadata="owner:ci") == [prod]
    assert await _ids(stack, ada, metadata="owner:ci", status="stopped") == [dev]
    assert await _ids(stack, ada, metadata="owner:ci", status="running,stopped") == [dev, prod]
    assert await _ids(stack, ada, status="running") == [url, prod]

    for bad in ("env", "bad key:v", ":v", "vmm version:1"):
        resp = await api.get("/v1/capsules", params={"metadata": bad}, headers=ada.h)
        assert_error(resp, 400, "invalid_request")
    resp = await api.get("/v1/capsules", params={"metadata": ["a:1", "a:2"]}, headers=ada.h)
    assert_error(resp, 400, "invalid_request")
    resp = await api.get(
        "/v1/capsules", params={"metadata": [f"k{i}:v" for i in range(21)]}, headers=ada.h
    )
    assert_error(resp, 400, "invalid_request")


async def test_templates_carry_the_clients_fields(stack: Stack) -> None:
    api = stack.client
    ada = await new_account(api)
    capsule = await make_capsule(api, ada, metadata={"env": "prod"})
    made = await api.post(
        "/v1/snapshots", json={"sandbox_id": capsule["id"], "name": "snap-a"}, headers=ada.h
    )
    assert made.status_code == 201, made.text
    snap = made.json()
    assert (snap["platform"], snap["protected"]) == (False, False)
    assert snap["metadata"] == {"env": "prod", **VERSIONS}
    listed = {t["name"]: t for t in (await api.get("/v1/snapshots", headers=ada.h)).json()}
    assert set(listed) == {"minimal", "snap-a"}
    base = listed["minimal"]
    assert (base["platform"], base["protected"], base["metadata"]) == (True, True, {})
    assert listed["snap-a"] == snap
    # Our older names are gone from the team's routes.
    for t in listed.values():
        assert not {"is_platform", "default_user", "default_env"} & set(t)


async def test_published_sdk_reads_metadata_and_template_fields(
    start_app: StartApp,
    sdk: Any,
) -> None:
    async with start_app() as stack, served(stack.app) as url:
        ada = await new_account(stack.client)
        capsule = await make_capsule(stack.client, ada, metadata={"env": "prod"})
        await stack.client.post(
            "/v1/snapshots", json={"sandbox_id": capsule["id"], "name": "snap-b"}, headers=ada.h
        )

        def read() -> tuple[Any, list[Any], list[Any]]:
            with sdk.WrennClient(api_key=ada.key, base_url=url) as client:
                return (
                    client.capsules.get(capsule["id"]),
                    client.capsules.list(),
                    client.snapshots.list(),
                )

        got, listed, templates = await asyncio.to_thread(read)
        assert got.metadata == {"env": "prod", **VERSIONS}
        assert [c.metadata for c in listed] == [got.metadata]
        by_name = {t.name: t for t in templates}
        assert (by_name["minimal"].platform, by_name["minimal"].protected) == (True, True)
        assert (by_name["snap-b"].platform, by_name["snap-b"].protected) == (False, False)
        assert by_name["snap-b"].metadata == got.metadata


async def test_a_platform_templates_name_is_reserved(stack: Stack) -> None:
    api, agent = stack.client, stack.agent
    ada, bob = await new_account(api), await new_account(api)
    capsule = await make_capsule(api, ada)
    calls = len(agent.calls)
    for params in ({}, {"overwrite": "true"}):
        resp = await api.post(
            "/v1/snapshots",
            json={"sandbox_id": capsule["id"], "name": "minimal"},
            params=params,
            headers=ada.h,
        )
        assert_error(resp, 409, "name_reserved")
    assert len(agent.calls) == calls  # refused before the agent is asked
    # Another team's name is not: names are per team (tests/orchestration/test_template_names.py).
    made = await api.post(
        "/v1/snapshots", json={"sandbox_id": capsule["id"], "name": "ada-x"}, headers=ada.h
    )
    assert made.status_code == 201, made.text
    theirs = await make_capsule(api, bob)
    resp = await api.post(
        "/v1/snapshots", json={"sandbox_id": theirs["id"], "name": "ada-x"}, headers=bob.h
    )
    assert resp.status_code == 201, resp.text
