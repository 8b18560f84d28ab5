"""A newer agent started on a data dir whose base template an older recipe built (before the
default user), with a running and a paused capsule on it: the tree their overlays' lower layer
is is kept as it is (the running capsule answers with its processes, the paused one resumes with
its files), the agent's log says so with the exact command to rebuild, and that command refuses
while the capsules exist; nothing leaks once they are destroyed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from wrenn_server.agentproto.client import AgentClient

from .conftest import DATA_DIR, AgentProcess
from .test_crash_recovery import (
    BOOTED,
    ControlPlane,
    User,
    _check_kept,
    _converged,
    _destroy_all_and_check_leaks,
    _prepare,
    platform,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.integration

# What template.json held before the default user (and recipe versions).
OLD_FIELDS = ("default_user", "recipe_version")


async def test_a_stale_base_template_in_use_is_kept_and_named_with_the_command(
    platform: tuple[ControlPlane, User],  # noqa: F811
    agent_process: AgentProcess,
    agent: AgentClient,
) -> None:
    _cp, user = platform
    base = DATA_DIR / "templates/minimal"
    meta = base / "template.json"
    current = meta.read_bytes()
    async with user.client() as api:
        live, paused = await _prepare(api, **BOOTED)
        agent_process.kill9()
        old = {k: v for k, v in json.loads(current).items() if k not in OLD_FIELDS}
        meta.write_text(json.dumps(old))
        inode = (base / "rootfs").stat().st_ino
        logged = agent_process.log_path.stat().st_size
        try:
            await asyncio.to_thread(agent_process.start)
            listed = await _converged(api, agent)
            assert (listed[live], listed[paused]) == ("running", "paused")
            await _check_kept(api, live, paused)
            log = agent_process.log_path.read_text()[logged:]
            assert "built by an older version" in log, log[-3000:]
            assert f"wrenn image build minimal --force --data-dir {DATA_DIR}" in log
            assert f"capsule {live}" in log and f"capsule {paused}" in log
            # Not rebuilt: the same tree, still the old recipe's.
            assert (base / "rootfs").stat().st_ino == inode
            assert "default_user" not in json.loads(meta.read_text())
            refused = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "wrenn_server.cli",
                    "image",
                    "build",
                    "minimal",
                    "--force",
                    "--data-dir",
                    str(DATA_DIR),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            said = " ".join((refused.stdout + refused.stderr).split())  # the terminal wraps it
            assert refused.returncode == 1, said
            assert "in use by" in said and live in said and paused in said
            assert (base / "rootfs").stat().st_ino == inode
        finally:
            meta.write_bytes(current)
        await _destroy_all_and_check_leaks(api, {live, paused})
