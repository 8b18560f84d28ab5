"""The soak bench (bench/soak.py) for a minute with 3 clients against a control plane process
over the real host agent: random creates, commands, file writes and reads, pauses, resumes,
snapshots and destroys, every invariant checked after every step, with faults injected (the
host agent, the control plane and a capsule's sandbox each killed -9 once, restarted, and every
capsule audited after each), and nothing left on the host after the final destroys. The
recorded 10-minute runs, without and with faults: docs/performance.md."""

from __future__ import annotations

import random

import pytest

from bench.chaos import KINDS, Chaos, agent_view
from bench.soak import soak

from .conftest import DATA_DIR, SECRET, AgentProcess
from .test_crash_recovery import ControlPlane, User, platform  # noqa: F401

pytestmark = pytest.mark.integration


# The faults' times, kinds and victims follow from it, so a failure can be run again.
CHAOS_SEED = 1313


@pytest.mark.timeout(1200)
async def test_a_short_chaos_soak_finds_no_lie(
    platform: tuple[ControlPlane, User],  # noqa: F811
    agent_process: AgentProcess,
) -> None:
    """The soak with its fault injector: the agent, the control plane and a capsule's sandbox
    each killed -9 at least once while operations are in flight, restarted, and after each the
    capsules audited (bench/soak.py: either outcome of a cut-short operation, never a lie)."""
    cp, _user = platform
    chaos = Chaos(
        agent=agent_process,
        control_plane=cp,
        data_dir=DATA_DIR,
        interval=8,  # three faults within the minute of work, whatever the draw
        max_faults=3,  # one of each kind; recovering from one takes up to a minute here
        rng=random.Random(CHAOS_SEED),
        agent_view=agent_view(agent_process.target, SECRET, DATA_DIR),
    )
    tally = await soak(
        cp.url, clients=3, seconds=60, seed=CHAOS_SEED, agent_data_dir=DATA_DIR, chaos=chaos
    )
    assert tally.violations == []
    assert set(chaos.faults) == set(KINDS), chaos.log
    # The faults struck work under way, and the clients got on with it after them.
    assert any(fault.in_flight for fault in chaos.log), chaos.log
    assert sum(tally.ops.values()) >= 20, tally.ops
