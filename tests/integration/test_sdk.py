"""The published Python SDK (`wrenn` on the package index) against our server, unchanged: it is
what our users run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.settings import Settings

from ..published_sdk import published_sdk
from ..served import served
from .conftest import SECRET, AgentProcess
from .test_ws import _account

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sdk() -> Iterator[ModuleType]:
    with published_sdk() as wrenn:
        yield wrenn


@pytest.fixture(scope="module")
async def server(
    agent_process: AgentProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, str]]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("sdk-controlplane"),
        dev_mode=True,
        agent_address=agent_process.target,
        agent_secret=SecretStr(SECRET),
        reconcile_interval_sec=0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), contextlib.AsyncExitStack() as stack:
        base_url = await stack.enter_async_context(served(app, ws="wsproto"))
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            _token, key = await _account(http, "sdk")
        yield base_url, key


def user_session(wrenn: Any, base_url: str, key: str) -> dict[str, Any]:
    """What a user writes, with the SDK's synchronous API."""
    seen: dict[str, Any] = {}
    with wrenn.Capsule(api_key=key, base_url=base_url) as capsule:
        seen["echo"] = capsule.commands.run("echo hello from the sdk").stdout
        capsule.files.write("/home/wrenn-user/notes.txt", "kept across pause")
        seen["read"] = capsule.files.read("/home/wrenn-user/notes.txt")
        seen["listed"] = sorted(e.name for e in capsule.files.list("/home/wrenn-user"))
        handle = capsule.commands.run("sleep 300", background=True)
        seen["background_pid"] = handle.pid
        capsule.pause()
        capsule.resume()
        seen["after_resume"] = capsule.commands.run("cat /home/wrenn-user/notes.txt").stdout
        seen["processes"] = [p.pid for p in capsule.commands.list()]
        seen["exit_code"] = capsule.commands.run("exit 3").exit_code
    return seen


async def test_published_sdk_works_unchanged(sdk: ModuleType, server: tuple[str, str]) -> None:
    base_url, key = server
    seen = await asyncio.to_thread(user_session, sdk, base_url, key)
    assert seen["echo"] == "hello from the sdk\n"
    assert seen["read"] == "kept across pause"
    assert "notes.txt" in seen["listed"]
    assert seen["after_resume"] == "kept across pause"
    assert seen["background_pid"] in seen["processes"]
    assert seen["exit_code"] == 3
    # Leaving the `with` block destroyed the capsule: listed only when stopped ones are asked for.
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}) as http:
        assert (await http.get("/v1/capsules")).json() == []
        ended = (await http.get("/v1/capsules", params={"status": "stopped"})).json()
    assert {c["status"] for c in ended} == {"stopped"}
