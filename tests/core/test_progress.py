"""Progress lines: throughput, elapsed time and ETA, at most one per interval plus the last."""

from __future__ import annotations

import logging

import pytest

from synthmed.core import progress
from synthmed.core.progress import ProgressLog, duration, progress_text


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (12.4, "12s"), (185, "3m05s"), (3720, "1h02m"), (-3, "0s")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_progress_text_counts_only_what_was_timed() -> None:
    # 100 of 400 done, 40 of them before timing began (a resumed run): 60 in 3 s = 20/s, 300 left = 15 s
    assert progress_text(100, 400, 3.0, "steps", start=40) == "100/400 steps (20 steps/s), elapsed 3s, ETA 15s"
    assert progress_text(0, 10, 0.0, "images").endswith("ETA unknown")


def test_progress_log_is_rate_limited_and_always_logs_the_end(monkeypatch, caplog) -> None:
    clock = iter([0.0, 1.0, 2.0, 40.0, 40.0, 41.0, 41.0])  # start, one per update, one per line logged
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    log = ProgressLog(logging.getLogger("synthmed.test"), "sampling", 4, "images", every_s=30)
    with caplog.at_level(logging.INFO, logger="synthmed.test"):
        for done in (1, 2, 3, 4):  # at t = 1, 2 (quiet), 40 (30 s passed), 41 (the last)
            log.update(done)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("sampling: 3/4 images") and lines[1].startswith("sampling: 4/4")
