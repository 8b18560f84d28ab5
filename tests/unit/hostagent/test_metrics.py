"""The metric tiers and the CPU meter (hostagent/metrics.py), without a capsule."""

from __future__ import annotations

from wrenn_server.hostagent.metrics import TIERS, CapsuleMetrics, CpuMeter, Point


def _feed(metrics: CapsuleMetrics, start: float, seconds: float, cpu: float) -> None:
    steps = int(seconds / 0.5)
    for i in range(steps):
        metrics.add(Point(ts=start + i * 0.5, cpu_pct=cpu, mem_bytes=100, disk_bytes=7))


def test_raw_tier_keeps_the_last_ten_minutes() -> None:
    metrics = CapsuleMetrics()
    _feed(metrics, 0.0, 900, 1.0)  # 15 minutes
    raw = metrics.tiers()["10m"]
    assert len(raw) == TIERS[0].capacity == 1200
    assert raw[0].ts == 300.0 and raw[-1].ts == 899.5


def test_coarse_tiers_average_closed_steps_only() -> None:
    metrics = CapsuleMetrics()
    _feed(metrics, 0.0, 30, 10.0)  # first 30 s window at 10 %
    _feed(metrics, 30.0, 30, 50.0)  # second window at 50 %
    _feed(metrics, 60.0, 1, 90.0)  # opens a third window
    two_hours = metrics.tiers()["2h"]
    assert [(p.ts, p.cpu_pct) for p in two_hours] == [(0.0, 10.0), (30.0, 50.0)]
    assert all(p.mem_bytes == 100 and p.disk_bytes == 7 for p in two_hours)
    assert metrics.tiers()["24h"] == []  # its first 5-minute step is still open


def test_coarse_tiers_are_bounded() -> None:
    metrics = CapsuleMetrics()
    for window in range(300):  # 300 windows of 30 s, one sample each
        metrics.add(Point(ts=window * 30.0, cpu_pct=1.0, mem_bytes=1, disk_bytes=1))
    assert len(metrics.tiers()["2h"]) == 240


def test_cpu_meter_normalizes_to_vcpus_and_survives_counter_resets() -> None:
    meter = CpuMeter()
    assert meter.percent(0, vcpus=2, now=0.0) == 0.0  # no previous reading
    # 1 s of CPU time in 1 s of wall time on 2 vCPUs: half the capsule's CPU.
    assert meter.percent(1_000_000_000, vcpus=2, now=1.0) == 50.0
    assert meter.percent(5_000_000_000, vcpus=2, now=2.0) == 100.0  # clamped
    assert meter.percent(10, vcpus=2, now=3.0) == 0.0  # new sandbox: counter restarted
    assert meter.percent(None, vcpus=2, now=4.0) == 0.0
