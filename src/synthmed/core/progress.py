"""Progress as log lines: done/total, throughput, elapsed time and ETA.

A tqdm bar shows progress on a terminal only (synthmed's bars are off without one, e.g.
under ``dvc repro`` or redirected to a file); these lines reach the log in every case, at
most one per ``every_s`` seconds plus the last one, so that a long stage is never silent.
"""

from __future__ import annotations

import logging
import time


def duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``3m05s`` or ``12s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _rate(done: int, elapsed_s: float, start: int) -> float:
    return (done - start) / elapsed_s if elapsed_s > 0 else 0.0


def timing_text(done: int, total: int, elapsed_s: float, *, start: int = 0) -> str:
    """``"elapsed 3s, ETA 8s"``; ``start`` items were done before timing began."""
    rate = _rate(done, elapsed_s, start)
    eta = duration((total - done) / rate) if rate > 0 else "unknown"
    return f"elapsed {duration(elapsed_s)}, ETA {eta}"


def progress_text(done: int, total: int, elapsed_s: float, unit: str, *, start: int = 0) -> str:
    """``"120/400 images (35.2 images/s), elapsed 3s, ETA 8s"``; ``start`` items were done before timing began."""
    return (f"{done}/{total} {unit} ({_rate(done, elapsed_s, start):.3g} {unit}/s), "
            + timing_text(done, total, elapsed_s, start=start))


class ProgressLog:
    """Logs `progress_text` lines for a task of ``total`` items: ``update(done)`` as it goes."""

    def __init__(self, logger: logging.Logger, what: str, total: int, unit: str, *, start: int = 0,
                 every_s: float = 30.0) -> None:
        self.logger, self.what, self.total, self.unit = logger, what, int(total), unit
        self.start, self.every_s = int(start), float(every_s)
        self.began = self.last = time.perf_counter()

    def text(self, done: int) -> str:
        return progress_text(done, self.total, time.perf_counter() - self.began, self.unit, start=self.start)

    def timing(self, done: int) -> str:
        """Elapsed time and ETA only (for lines that give the count themselves)."""
        return timing_text(done, self.total, time.perf_counter() - self.began, start=self.start)

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if done >= self.total or now - self.last >= self.every_s:
            self.last = now
            self.logger.info("%s: %s", self.what, self.text(done))
