"""The soak bench (bench/soak.py) for a minute with 3 clients against a control plane process
over the real host agent: random creates, commands, file writes and reads, pauses, resumes,
snapshots and destroys, every invariant checked after every step, and nothing left on the host
after the final destroys; and the same for 90 s with faults injected (the host agent, the
control plane and sandboxes killed -9 at random, each restarted). The recorded 10-minute runs:
docs/performance.md."""

from __future__ import annotations

import random

import pytest

from bench.chaos import KINDS, Chaos, agent_view
from bench.soak import soak

from .conftest import DATA_DIR, SECRET, AgentProcess
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
        interval=15,
        max_faults=4,  # recovering from one takes up to a minute here (a restart, the audit)
        rng=random.Random(CHAOS_SEED),
        agent_view=agent_view(agent_process.target, SECRET, DATA_DIR),
    )
    tally = await soak(
        cp.url, clients=3, seconds=90, seed=CHAOS_SEED, agent_data_dir=DATA_DIR, chaos=chaos
    )
    assert tally.violations == []
    assert set(chaos.faults) == set(KINDS), chaos.log
    # The faults struck work under way, and the clients got on with it after them.
    assert any(fault.in_flight for fault in chaos.log), chaos.log
    assert sum(tally.ops.values()) >= 20, tally.ops
