"""The published SDK reading what the platform says of a real capsule and its templates: the
capsule's `metadata` (the creator's labels and the versions of runsc, the host agent and envd
that run it, refreshed by a resume) and the templates' `platform`, `protected` and `metadata`."""

from __future__ import annotations

import asyncio
import re
from types import ModuleType
from typing import Any

import httpx
import pytest

from wrenn_server.envd import __version__ as ENVD_VERSION

from .test_sdk import sdk as sdk  # the published SDK, as a fixture
from .test_sdk import server as server  # a control plane over the real agent

pytestmark = pytest.mark.integration

LABELS = {"env": "prod", "owner.team": "data-eng"}


def read(wrenn: Any, base_url: str, key: str, capsule_id: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with wrenn.WrennClient(api_key=key, base_url=base_url) as client:
        seen["got"] = client.capsules.get(capsule_id)
        seen["listed"] = client.capsules.list()
        client.capsules.pause(capsule_id)
        seen["resumed"] = client.capsules.resume(capsule_id)
        seen["snapshot"] = client.snapshots.create(capsule_id, name="sdk-meta-snap")
        seen["templates"] = client.snapshots.list()
        client.snapshots.delete("sdk-meta-snap")
        client.capsules.destroy(capsule_id)
    return seen


async def test_sdk_reads_capsule_metadata_and_template_fields(
    sdk: ModuleType, server: tuple[str, str]
) -> None:
    base_url, key = server
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}, timeout=120) as h:
        # The SDK's create sends no metadata: a user adds it with a plain request.
        made = await h.post("/v1/capsules", json={"metadata": LABELS})
        assert made.status_code == 201, made.text
    seen = await asyncio.to_thread(read, sdk, base_url, key, made.json()["id"])

    meta = seen["got"].metadata
    assert {k: meta[k] for k in LABELS} == LABELS
    assert meta["envd_version"] == ENVD_VERSION
    assert meta["agent_version"]
    # What runsc --version names its release (Debian's 0.0~20240729.0, upstream's release-...).
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+~-]*", meta["vmm_version"])
    assert set(meta) == {*LABELS, "vmm_version", "agent_version", "envd_version"}
    assert [c.metadata for c in seen["listed"] if c.id == seen["got"].id] == [meta]
    assert seen["resumed"].metadata == meta

    snap = seen["snapshot"]
    assert (snap.platform, snap.protected, snap.metadata) == (False, False, meta)
    by_name = {t.name: t for t in seen["templates"]}
    assert (by_name["minimal"].platform, by_name["minimal"].protected) == (True, True)
    assert by_name["sdk-meta-snap"].metadata == meta
