"""E2B's in-sandbox protocol served by the control plane, on real gVisor capsules through the
stock `e2b` SDK (AsyncSandbox, E2B_SANDBOX_URL's header routing): what the scenario in
test_e2b_sdk.py does not reach - a command's timeout killing it inside the capsule, a 64 MiB
file streamed both ways, gzip and multipart uploads, the user, directory and environment of
commands and files, symlinks, and the agent's refusals as the SDK's exceptions."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import httpx
import pytest
from e2b import AsyncSandbox, CommandExitException, NotFoundException, TimeoutException
from e2b.exceptions import InvalidArgumentException, SandboxException

from .test_e2b_sdk import HOME, server  # noqa: F401

pytestmark = pytest.mark.integration

BIG = 64 * 1024 * 1024


async def _wait_gone(sbx: AsyncSandbox, pattern: str) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        ps = await sbx.commands.run(f"pgrep -f '{pattern}' || true", user="root")
        if not ps.stdout.strip():
            return
        assert asyncio.get_running_loop().time() < deadline, f"{pattern} still runs: {ps.stdout}"
        await asyncio.sleep(0.2)


async def test_commands_through_the_protocol(server: dict[str, Any]) -> None:  # noqa: F811
    sbx = await AsyncSandbox.create("base", timeout=300, **server)
    try:
        done = await sbx.commands.run("id -un; pwd; echo $ONE", envs={"ONE": "1"}, cwd="/tmp")
        assert done.stdout.split() == ["wrenn-user", "/tmp", "1"]
        assert (await sbx.commands.run("id -un", user="root")).stdout == "root\n"
        with pytest.raises(TimeoutException):
            await sbx.commands.run("sleep 1234", timeout=1)
        # The deadline killed it, as envd does ("[1]": not the line of pgrep's own shell).
        await _wait_gone(sbx, "sleep [1]234")
        with pytest.raises(CommandExitException) as failed:
            await sbx.commands.run("no-such-program")
        assert failed.value.exit_code == 127
        lines: list[str] = []
        handle = await sbx.commands.run(
            "for i in 1 2 3; do echo line$i; sleep 0.2; done",
            background=True,
            on_stdout=lines.append,
        )
        result = await handle.wait()
        assert result.stdout == "line1\nline2\nline3\n" and "".join(lines) == result.stdout
        with pytest.raises(SandboxException):
            await sbx.commands.run("true", user="nobody-here")
    finally:
        await sbx.kill()


async def test_files_through_the_protocol(server: dict[str, Any]) -> None:  # noqa: F811
    sbx = await AsyncSandbox.create("base", timeout=300, **server)
    try:
        payload = os.urandom(BIG)
        await sbx.files.write(f"{HOME}/big.bin", payload)
        got = await sbx.files.read(f"{HOME}/big.bin", format="bytes")
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        digest = await sbx.commands.run(f"sha256sum {HOME}/big.bin")
        assert digest.stdout.split()[0] == hashlib.sha256(payload).hexdigest()
        await sbx.files.write(f"{HOME}/z.txt", b"squeeze " * 100_000, gzip=True)
        assert await sbx.files.read(f"{HOME}/z.txt", format="bytes") == b"squeeze " * 100_000
        written = await sbx.files.write_files(
            [{"path": f"{HOME}/m/a", "data": "A"}, {"path": f"{HOME}/m/b", "data": b"B"}]
        )
        assert [w.path for w in written] == [f"{HOME}/m/a", f"{HOME}/m/b"]
        owner = await sbx.commands.run(f"stat -c %U {HOME}/m/a")
        assert owner.stdout == "wrenn-user\n"
        await sbx.files.write("/root/secret", "r", user="root")
        owner = await sbx.commands.run("stat -c %U /root/secret", user="root")
        assert owner.stdout == "root\n"
        assert await sbx.files.read("/root/secret", user="root") == "r"
        with pytest.raises(NotFoundException):
            await sbx.files.read(f"{HOME}/missing")
        with pytest.raises(NotFoundException):
            await sbx.files.remove(f"{HOME}/missing")
        with pytest.raises((InvalidArgumentException, SandboxException)):
            await sbx.files.list(f"{HOME}/z.txt")  # not a directory
        entries = await sbx.files.list(HOME, depth=2)
        assert f"{HOME}/m/b" in [e.path for e in entries]
        link = await sbx.commands.run(f"ln -s {HOME}/z.txt {HOME}/link")
        assert link.exit_code == 0
        info = await sbx.files.get_info(f"{HOME}/link")
        assert (info.type.value, info.symlink_target) == ("symlink", f"{HOME}/z.txt")
    finally:
        await sbx.kill()


async def test_signed_file_urls_on_a_real_capsule(server: dict[str, Any]) -> None:  # noqa: F811
    """The SDK's signed URLs used without credentials, in the host form `49983-{id}.{domain}`
    (under E2B_SANDBOX_URL the URL itself names no sandbox: its Host is set as the port proxy's
    domain would)."""
    sbx = await AsyncSandbox.create("base", timeout=300, **server)
    try:
        host = {"Host": f"49983-{sbx.sandbox_id}.{sbx.sandbox_domain}"}
        async with httpx.AsyncClient(timeout=30) as http:
            up = sbx.upload_url(f"{HOME}/signed.txt", use_signature_expiration=60)
            resp = await http.post(up, headers=host, files={"file": ("x", b"via a signed URL")})
            assert resp.status_code == 200, resp.text
            owner = await sbx.commands.run(f"stat -c %U {HOME}/signed.txt; cat {HOME}/signed.txt")
            assert owner.stdout == "wrenn-user\nvia a signed URL"
            down = sbx.download_url("/etc/hostname", user="root")
            resp = await http.get(down, headers=host)
            assert resp.status_code == 200 and resp.content
            resp = await http.get(down.replace("hostname", "shadow"), headers=host)
            assert resp.status_code == 401
    finally:
        await sbx.kill()
