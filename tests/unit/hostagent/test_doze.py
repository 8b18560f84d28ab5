"""Doze (hostagent/doze.py): the rule that decides which capsule is idle enough to freeze, the
CPU and traffic window it reads, the cgroup freezer's files (v1 and v2, in a stand-in cgroup
tree), and the dozer's passes over a table of capsules: frozen only when idle, thawed by a wake,
a lifecycle operation or its end."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from wrenn_server.hostagent.capsule import PAUSED, POOLED, RUNNING, Capsule
from wrenn_server.hostagent.doze import (
    CgroupFreezer,
    Dozer,
    Observation,
    Sample,
    Window,
    link_packets,
    should_doze,
)
from wrenn_server.hostagent.network import CapsuleNet

AFTER = 30.0
MAX_CPU = 5.0
IDLE = Observation(idle_sec=31.0, in_use=0, lifecycle=False, cpu_pct=2.5, packets=0)


def test_an_idle_capsule_dozes() -> None:
    assert should_doze(IDLE, AFTER, MAX_CPU)
    assert should_doze(replace(IDLE, idle_sec=AFTER, cpu_pct=MAX_CPU), AFTER, MAX_CPU)


@pytest.mark.parametrize(
    "change",
    [
        {"idle_sec": 29.9},  # asked something within the quiet period
        {"in_use": 1},  # a command, stream or tunnel is open
        {"lifecycle": True},  # being paused, destroyed, snapshotted
        {"cpu_pct": 5.1},  # a process does work
        {"packets": 1},  # traffic on its link
        {"cpu_pct": None},  # not watched for a whole quiet period yet
        {"packets": None},
    ],
)
def test_anything_going_on_keeps_it_awake(change: dict[str, object]) -> None:
    assert not should_doze(replace(IDLE, **change), AFTER, MAX_CPU)  # type: ignore[arg-type]


def test_zero_turns_dozing_off() -> None:
    assert not should_doze(replace(IDLE, idle_sec=1e9), 0, MAX_CPU)


def test_window_measures_over_at_least_the_span() -> None:
    w = Window()
    assert w.over(10) is None
    w.add(Sample(0.0, 0, 100))
    w.add(Sample(5.0, 100_000_000, 100))
    assert w.over(10) is None  # 5 s seen, 10 asked
    w.add(Sample(10.0, 250_000_000, 103))
    cpu, packets = w.over(10) or (0.0, 0)
    assert cpu == pytest.approx(2.5)  # 0.25 s of CPU over 10 s
    assert packets == 3
    w.add(Sample(16.0, 310_000_000, 103))
    cpu, packets = w.over(10) or (0.0, 0)  # from the newest sample 10 s old: t=5
    assert cpu == pytest.approx(210_000_000 / 1e9 / 11 * 100)
    assert packets == 3


def test_window_starts_again_when_a_counter_goes_back() -> None:
    w = Window()
    w.add(Sample(0.0, 10_000_000_000, 500))
    w.add(Sample(20.0, 10_100_000_000, 500))
    w.add(Sample(21.0, 1_000, 500))  # a new sandbox (resumed): its cgroup counts from 0
    assert w.over(10) is None


def _cgroup_tree(root: Path, cgroup: str, v1: bool) -> Path:
    if v1:
        d = root / "freezer" / cgroup.strip("/")
        d.mkdir(parents=True)
        (d / "freezer.state").write_text("THAWED\n")
        return d / "freezer.state"
    d = root / cgroup.strip("/")
    d.mkdir(parents=True)
    (d / "cgroup.freeze").write_text("0\n")
    return d / "cgroup.freeze"


@pytest.mark.parametrize(
    ("v1", "frozen", "thawed"), [(True, "FROZEN", "THAWED"), (False, "1", "0")]
)
def test_freezer_writes_the_cgroups_file(
    tmp_path: Path, v1: bool, frozen: str, thawed: str
) -> None:
    state = _cgroup_tree(tmp_path, "/wrenn/sb-x", v1)
    freezer = CgroupFreezer(tmp_path)
    assert not freezer.frozen("/wrenn/sb-x")
    assert freezer.freeze("/wrenn/sb-x")
    assert state.read_text() == frozen
    assert freezer.frozen("/wrenn/sb-x")
    freezer.thaw("/wrenn/sb-x")
    assert state.read_text() == thawed
    assert not freezer.frozen("/wrenn/sb-x")


def test_freezer_of_a_gone_cgroup(tmp_path: Path) -> None:
    freezer = CgroupFreezer(tmp_path)
    assert not freezer.freeze("/wrenn/sb-gone")
    freezer.thaw("/wrenn/sb-gone")  # nothing to do, nothing raised
    assert not freezer.frozen("/wrenn/sb-gone")


def test_link_packets_adds_both_ways(tmp_path: Path) -> None:
    stats = tmp_path / "wvabc" / "statistics"
    stats.mkdir(parents=True)
    (stats / "rx_packets").write_text("7\n")
    (stats / "tx_packets").write_text("5\n")
    assert link_packets("wvabc", tmp_path) == 12
    assert link_packets("wvgone", tmp_path) is None


# -- the dozer's passes --------------------------------------------------------------------

_ids = (f"sb-00000000-0000-4000-8000-{n:012x}" for n in range(1, 1000))


@dataclass
class Table:
    capsules: dict[str, Capsule] = field(default_factory=dict)
    locked: set[str] = field(default_factory=set)
    open: dict[str, int] = field(default_factory=dict)
    # What each capsule's counters read now: CPU ns and packets.
    counters: dict[str, tuple[int, int]] = field(default_factory=dict)

    def lock_users(self, sandbox_id: str) -> int:
        return 1 if sandbox_id in self.locked else 0

    def in_use(self, sandbox_id: str) -> int:
        return self.open.get(sandbox_id, 0)

    def add(self, tmp_path: Path, last_active_at: float) -> Capsule:
        sid = next(_ids)
        c = Capsule(sandbox_id=sid, template="minimal", base_image="minimal", vcpus=1,
                    memory_mb=256, disk_size_mb=1024, timeout_sec=0, token="t",
                    dir=tmp_path / sid, status=RUNNING, last_active_at=last_active_at,
                    net=CapsuleNet("wrn-x", "wvx", IPv4Address("10.0.0.1"),
                                   IPv4Address("10.0.0.2")))  # fmt: skip
        self.capsules[sid] = c
        self.counters[sid] = (0, 0)
        _cgroup_tree(tmp_path / "cg", c.cgroup, v1=True)
        return c


class Clock:
    """Wall and monotonic time moved by the test; CPU grows at `pct` of a core per capsule."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.now = 1_000_000.0

    def advance(self, sec: float, pct: dict[str, float] | None = None) -> None:
        self.now += sec
        for sid, (cpu, packets) in self.table.counters.items():
            used = (pct or {}).get(sid, 2.5) / 100 * sec * 1e9
            self.table.counters[sid] = (cpu + int(used), packets)


def _dozer(tmp_path: Path) -> tuple[Table, Clock, Dozer, CgroupFreezer]:
    table = Table()
    clock = Clock(table)
    freezer = CgroupFreezer(tmp_path / "cg")
    dozer = Dozer(
        table,
        AFTER,
        MAX_CPU,
        freezer,
        lambda c: table.counters.get(c.sandbox_id),
        lambda: clock.now,
    )
    return table, clock, dozer, freezer


def _pass(dozer: Dozer, clock: Clock) -> None:
    dozer.tick(now=clock.now, mono=clock.now)


def _run_for(dozer: Dozer, clock: Clock, sec: float, **kw: dict[str, float]) -> None:
    for _ in range(int(sec / dozer.interval)):
        clock.advance(dozer.interval, **kw)
        _pass(dozer, clock)


def test_the_dozer_freezes_an_idle_capsule_after_the_quiet_period(tmp_path: Path) -> None:
    table, clock, dozer, freezer = _dozer(tmp_path)
    c = table.add(tmp_path, last_active_at=clock.now)
    _pass(dozer, clock)
    _run_for(dozer, clock, AFTER - dozer.interval)
    assert not freezer.frozen(c.cgroup)
    _run_for(dozer, clock, 2 * dozer.interval)
    assert freezer.frozen(c.cgroup)
    assert dozer.dozing == {c.handle}

    # Anything reaching it thaws it, and it stays awake for a whole quiet period again.
    dozer.wake(c)
    assert not freezer.frozen(c.cgroup)
    assert not dozer.dozing
    _run_for(dozer, clock, AFTER - dozer.interval)
    assert not freezer.frozen(c.cgroup)
    _run_for(dozer, clock, 2 * dozer.interval)
    assert freezer.frozen(c.cgroup)


def test_busy_open_or_locked_capsules_stay_awake(tmp_path: Path) -> None:
    table, clock, dozer, freezer = _dozer(tmp_path)
    busy = table.add(tmp_path, last_active_at=clock.now)
    streaming = table.add(tmp_path, last_active_at=clock.now)
    pausing = table.add(tmp_path, last_active_at=clock.now)
    talking = table.add(tmp_path, last_active_at=clock.now)
    quiet = table.add(tmp_path, last_active_at=clock.now)
    table.open[streaming.sandbox_id] = 1
    table.locked.add(pausing.sandbox_id)
    for _ in range(int(3 * AFTER / dozer.interval)):
        cpu, packets = table.counters[talking.sandbox_id]
        table.counters[talking.sandbox_id] = (cpu, packets + 1)  # a packet every pass
        clock.advance(dozer.interval, pct={busy.sandbox_id: 100.0})
        _pass(dozer, clock)
    assert dozer.dozing == {quiet.handle}
    assert [freezer.frozen(c.cgroup) for c in (busy, streaming, pausing, talking, quiet)] == [
        False, False, False, False, True,
    ]  # fmt: skip


def test_a_capsule_that_stops_running_is_thawed_and_forgotten(tmp_path: Path) -> None:
    table, clock, dozer, freezer = _dozer(tmp_path)
    a = table.add(tmp_path, last_active_at=clock.now)
    b = table.add(tmp_path, last_active_at=clock.now)
    _pass(dozer, clock)
    _run_for(dozer, clock, AFTER + 2 * dozer.interval)
    assert dozer.dozing == {a.handle, b.handle}
    a.status = PAUSED  # (the manager wakes it before it pauses; a pass thaws it anyway)
    _pass(dozer, clock)
    assert not freezer.frozen(a.cgroup)
    assert dozer.dozing == {b.handle}
    dozer.wake_all()
    assert not freezer.frozen(b.cgroup)
    assert not dozer.dozing


def test_a_sandbox_whose_counters_are_gone_is_left_alone(tmp_path: Path) -> None:
    table, clock, dozer, freezer = _dozer(tmp_path)
    c = table.add(tmp_path, last_active_at=clock.now)
    del table.counters[c.sandbox_id]
    _pass(dozer, clock)
    _run_for(dozer, clock, 3 * AFTER)
    assert not freezer.frozen(c.cgroup)


def _proc_status(proc: Path, pid: int, sig_pnd: str, shd_pnd: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "status").write_text(
        f"Name:\trunsc-sandbox\nState:\tD (disk sleep)\nSigPnd:\t{sig_pnd}\nShdPnd:\t{shd_pnd}\n"
    )


@pytest.mark.parametrize("v1", [True, False])
def test_a_kill_pending_in_a_frozen_cgroup_is_seen(tmp_path: Path, v1: bool) -> None:
    state = _cgroup_tree(tmp_path / "cg", "/wrenn/sb-x", v1)
    (state.parent / "cgroup.procs").write_text("41\n42\n")
    proc = tmp_path / "proc"
    _proc_status(proc, 41, "0000000000000000", "0000000000004000")  # SIGTERM pending only
    _proc_status(proc, 42, "0000000000000000", "0000000000000000")
    freezer = CgroupFreezer(tmp_path / "cg", proc)
    assert not freezer.kill_pending("/wrenn/sb-x")
    (proc / "42" / "status").unlink()
    (proc / "42").rmdir()
    _proc_status(proc, 42, "0000000000000000", "0000000000000100")  # SIGKILL, to the process
    assert freezer.kill_pending("/wrenn/sb-x")
    assert not freezer.kill_pending("/wrenn/sb-gone")


def test_a_dozing_sandbox_killed_from_the_host_is_thawed_to_die(tmp_path: Path) -> None:
    """Under cgroup v1 a frozen task dies only once thawed: the dozer thaws a capsule whose
    sandbox was sent SIGKILL, so its death is seen without waiting for its next use."""
    table, clock, dozer, freezer = _dozer(tmp_path)
    freezer.proc_root = tmp_path / "proc"
    c = table.add(tmp_path, last_active_at=clock.now)
    state = tmp_path / "cg" / "freezer" / c.cgroup.strip("/")
    (state / "cgroup.procs").write_text("77\n")
    _proc_status(freezer.proc_root, 77, "0000000000000000", "0000000000000000")
    _pass(dozer, clock)
    _run_for(dozer, clock, AFTER + 2 * dozer.interval)
    assert dozer.dozing == {c.handle}
    _run_for(dozer, clock, 2 * dozer.interval)  # no kill pending: it keeps dozing
    assert dozer.dozing == {c.handle}
    (freezer.proc_root / "77" / "status").write_text("SigPnd:\t0000000000000100\n")
    _pass(dozer, clock)
    assert not freezer.frozen(c.cgroup)
    assert not dozer.dozing


def test_pooled_capsules_doze_too(tmp_path: Path) -> None:
    """The warm pool's idle capsules (not in the table: nobody owns them yet) doze like any
    idle capsule; one handed over is thawed (the manager wakes it) and, in the table and
    running, stays awake for a whole quiet period."""
    table, clock, _, freezer = _dozer(tmp_path)
    pooled = table.add(tmp_path, last_active_at=clock.now)
    del table.capsules[pooled.sandbox_id]
    pooled.status = POOLED
    ready = [pooled]
    dozer = Dozer(
        table,
        AFTER,
        MAX_CPU,
        freezer,
        lambda c: table.counters.get(c.sandbox_id),
        lambda: clock.now,
        pooled=lambda: ready,
    )
    _pass(dozer, clock)
    _run_for(dozer, clock, AFTER + dozer.interval)
    assert freezer.frozen(pooled.cgroup) and dozer.dozing == {pooled.handle}

    ready.clear()  # handed over
    dozer.wake(pooled)
    pooled.status = RUNNING
    table.capsules[pooled.sandbox_id] = pooled
    assert not freezer.frozen(pooled.cgroup)
    _run_for(dozer, clock, AFTER - dozer.interval)
    assert not freezer.frozen(pooled.cgroup)
