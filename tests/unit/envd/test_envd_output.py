"""envd's per-process output buffer: ordering, the 4 MiB cap per stream, lagging readers."""

from __future__ import annotations

from wrenn_server.envd.output import CAP, OutputLog


def test_reads_interleave_streams_in_write_order() -> None:
    log = OutputLog()
    cursor = [0, 0]
    log.append(0, b"a1")
    log.append(1, b"b1")
    log.append(0, b"a2")
    assert log.read(cursor) == [(0, b"a1"), (1, b"b1"), (0, b"a2")]
    assert log.read(cursor) == []
    log.append(0, b"a3")  # merged into the newest chunk, which this reader has partly seen
    assert log.read(cursor) == [(0, b"a3")]
    assert log.read([0, 0]) == [(0, b"a1"), (1, b"b1"), (0, b"a2a3")]


def test_each_stream_keeps_its_last_bytes() -> None:
    log = OutputLog(cap=10)
    log.append(1, b"err")
    for piece in (b"0123", b"4567", b"89ab", b"cdef"):
        log.append(0, piece)
    events = log.read([0, 0])
    assert b"".join(data for index, data in events if index == 0) == b"6789abcdef"
    assert b"".join(data for index, data in events if index == 1) == b"err"


def test_lagging_reader_skips_what_was_dropped() -> None:
    log = OutputLog()
    cursor = [0, 0]
    log.append(0, b"x" * 1000)
    assert log.read(cursor) == [(0, b"x" * 1000)]
    for _ in range(CAP // 65536 + 4):
        log.append(0, b"y" * 65536)
    data = b"".join(piece for _index, piece in log.read(cursor))
    assert data == b"y" * CAP
    assert cursor == [1000 + (CAP // 65536 + 4) * 65536, 0]


def test_byte_by_byte_output_stays_compact() -> None:
    log = OutputLog()
    for i in range(20000):
        log.append(i % 2, b"z")  # strictly alternating: no natural merging
    events = log.read([0, 0])
    assert sum(len(data) for _index, data in events) == 20000
    assert len(events) < 5000  # bounded bookkeeping, not one entry per byte
