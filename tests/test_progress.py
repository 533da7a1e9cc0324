"""Progress lines: rate-limited, with a time-left estimate, silent at WARNING."""

from __future__ import annotations

import logging

from arl_mpi.progress import Progress, format_seconds


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lines_every_interval_with_estimate(caplog):
    clock = FakeClock()
    log = logging.getLogger("arl_mpi.test_progress")
    with caplog.at_level(logging.INFO, logger=log.name):
        p = Progress("ingest of x.ms", 100, log, unit="rows", interval_s=5, clock=clock)
        for _ in range(100):  # 1 s per row: 100 s, a line every 5 s at most
            clock.t += 1.0
            p.update(1)
        p.done()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 100 // 5 + 1
    # after 25 s a quarter is done: 75 s left
    assert "ingest of x.ms: 25% (25/100 rows) after 25 s, about 1 min 15 s left" in lines
    assert lines[-1] == "ingest of x.ms: done (100 rows) in 1 min 40 s"


def test_silent_at_warning_and_for_short_steps(caplog):
    clock = FakeClock()
    log = logging.getLogger("arl_mpi.test_progress2")
    with caplog.at_level(logging.WARNING, logger=log.name):
        p = Progress("simulation", 10, log, interval_s=1, clock=clock)
        for _ in range(10):
            clock.t += 10
            p.update()
        p.done()
    assert caplog.records == []
    with caplog.at_level(logging.INFO, logger=log.name):
        p = Progress("quick", 10, log, interval_s=5, clock=clock)
        p.update(10)
        p.done()
    assert caplog.records == []


def test_format_seconds():
    assert format_seconds(42.4) == "42 s"
    assert format_seconds(185) == "3 min 5 s"
    assert format_seconds(7620) == "2 h 07 min"
