"""The soak bench (bench/soak.py) for a minute with 3 clients against a control plane process
over the real host agent: random creates, commands, file writes and reads, pauses, resumes,
snapshots and destroys, every invariant checked after every step, and nothing left on the host
after the final destroys. The recorded 10-minute run: docs/performance.md."""

from __future__ import annotations

import pytest

from bench.soak import soak

from .conftest import DATA_DIR
from .test_crash_recovery import ControlPlane, User, platform  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
async def test_a_short_soak_keeps_every_promise(platform: tuple[ControlPlane, User]) -> None:  # noqa: F811
    cp, _user = platform
    tally = await soak(cp.url, clients=3, seconds=60, agent_data_dir=DATA_DIR)
    assert tally.violations == []
    # It did something of each kind, so the invariants were put to the test.
    assert all(tally.ops[op] > 0 for op in ("create", "exec", "files", "pause", "resume")), (
        tally.ops
    )
    assert sum(tally.ops.values()) >= 30, tally.ops
