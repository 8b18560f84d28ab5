"""E2B's in-sandbox protocol (envd: process.Process, filesystem.Filesystem, /files, /health,
/envs) served by the control plane for a capsule, driven by the stock `e2b` SDK's own sandbox
object (AsyncSandbox with the capsule's id, its envd access token and `sandbox_url` pointing at
the app behind a real uvicorn: E2B_SANDBOX_URL's routing by E2b-Sandbox-Id / E2b-Sandbox-Port
headers) over the fake agent; plain httpx where the SDK hides the answer (Connect error codes,
refusals, the `49983-{id}.{domain}` host form)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from e2b import AsyncSandbox, CommandExitException, ConnectionConfig
from e2b.exceptions import (
    AuthenticationException,
    InvalidArgumentException,
    NotFoundException,
    TimeoutException,
)
from packaging.version import Version

from wrenn_server.controlplane.security import TokenCodec

from ..controlplane.conftest import TEST_JWT_SECRET
from .conftest import Stack
from .helpers import Account, make_capsule, new_account
from .test_port_proxy import served

ENVD_PORT = 49983


def envd_token(account: Account, capsule_id: str, kind: str = "envd") -> str:
    codec = TokenCodec(TEST_JWT_SECRET, __import__("datetime").timedelta(hours=1))
    return codec.issue_e2b_access(capsule_id, uuid.UUID(account.team_id[5:]), kind)  # type: ignore[arg-type]


def sandbox(url: str, capsule_id: str, token: str | None) -> AsyncSandbox:
    headers = {"E2b-Sandbox-Id": capsule_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
    if token is not None:
        headers["X-Access-Token"] = token
    config = ConnectionConfig(
        sandbox_url=url, api_key="unused", extra_sandbox_headers=headers, request_timeout=20
    )
    return AsyncSandbox(
        sandbox_id=capsule_id,
        sandbox_domain=None,
        envd_version=Version("0.6.4"),
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=config,
    )


@asynccontextmanager
async def e2b_capsule(stack: Stack) -> AsyncIterator[tuple[Account, str, str, AsyncSandbox]]:
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    async with served(stack.app) as url:
        yield account, cid, url, sandbox(url, cid, envd_token(account, cid))


async def test_commands_run_to_their_end(stack: Stack) -> None:
    async with e2b_capsule(stack) as (_, _, _, sbx):
        result = await sbx.commands.run("echo hello; echo oops >&2")
        assert (result.exit_code, result.stdout, result.stderr) == (0, "hello\n", "oops\n")
        with pytest.raises(CommandExitException) as failed:
            await sbx.commands.run("exit 3")
        assert failed.value.exit_code == 3
