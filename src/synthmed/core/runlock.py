"""An exclusive, process-lifetime lock so that two runs never write the same outputs at once.

``RunLock`` holds ``fcntl.flock`` on a lock file for as long as the run lasts. The kernel
drops the lock when the process exits, however it exits (SIGKILL included), so a crashed
run never leaves a stale lock behind. The file records who holds it (pid, host, start time,
command) so that a second run can say whom it is waiting for.

A contending run either waits (``mode="wait"``: it logs the holder every ``report_every_s``
seconds and gives up with ``RunLockTimeout`` after ``timeout_s``) or fails at once
(``mode="fail"``: ``RunLockBusy`` naming the holder). ``settings_from_env`` reads the mode
and timeout from ``SYNTHMED_LOCK`` and ``SYNTHMED_LOCK_TIMEOUT_S``.

flock locks are advisory and local: they serialise runs on one machine (or on a shared file
system that implements flock, such as NFSv4); runs on different machines with separate
copies of the data do not need them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MODES = ("wait", "fail")
ENV_MODE = "SYNTHMED_LOCK"
ENV_TIMEOUT = "SYNTHMED_LOCK_TIMEOUT_S"
# A CPU demo takes about 20 minutes end to end and a GPU training run can take hours: a
# waiting run gives up after 6 hours rather than hang a scheduler slot forever.
DEFAULT_TIMEOUT_S = 6 * 3600.0
DEFAULT_REPORT_EVERY_S = 30.0
# How often a waiting run retries the lock: short enough that it starts promptly after the
# holder finishes, long enough to cost nothing.
POLL_S = 0.2


class RunLockBusy(RuntimeError):
    """Another run holds the lock and the mode is ``fail``."""


class RunLockTimeout(RunLockBusy):
    """Another run held the lock for longer than the wait timeout."""


def settings_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, float]:
    """(mode, timeout in seconds) from ``SYNTHMED_LOCK`` (wait|fail, default wait) and
    ``SYNTHMED_LOCK_TIMEOUT_S`` (default 6 hours).

    Raises:
        ValueError: naming the variable, the value found and what is expected.
    """
    environ = os.environ if environ is None else environ
    mode = environ.get(ENV_MODE, "wait").strip().lower() or "wait"
    if mode not in MODES:
        raise ValueError(f"{ENV_MODE}={environ.get(ENV_MODE)!r}: expected one of {list(MODES)} (default wait).")
    raw = environ.get(ENV_TIMEOUT, "").strip()
    try:
        timeout = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        timeout = -1.0
    if not timeout >= 0:
        raise ValueError(f"{ENV_TIMEOUT}={raw!r}: expected a number of seconds >= 0.")
    return mode, timeout


def read_holder(path: Path) -> dict[str, Any] | None:
    """What the lock file says about its holder (None if empty or unreadable)."""
    try:
        text = Path(path).read_text()
        holder = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def describe_holder(holder: Mapping[str, Any] | None) -> str:
    if not holder:
        return "another process (the lock file names no holder yet)"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
        f"running `{holder.get('command')}`"
    )


class RunLock:
    """``with RunLock(path): ...`` holds an exclusive flock on ``path`` for the block.

    Args:
        path: the lock file (created with its folder).
        mode: ``"wait"`` for the holder to finish, or ``"fail"`` at once.
        timeout_s: the longest wait in ``wait`` mode.
        report_every_s: how often a waiting run logs whom it waits for.
        command: recorded as the holder's command (default: this process's argv).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        mode: str = "wait",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        report_every_s: float = DEFAULT_REPORT_EVERY_S,
        command: str | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"Run lock mode must be one of {list(MODES)}, got {mode!r}.")
        self.path = Path(path)
        self.mode = mode
        self.timeout_s = float(timeout_s)
        self.report_every_s = float(report_every_s)
        self.command = command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (waiting or failing as configured), then record this process.

        Raises:
            RunLockBusy: ``fail`` mode and the lock is held; the message names the holder.
            RunLockTimeout: ``wait`` mode and the holder kept it beyond ``timeout_s``.
        """
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_RDWR without O_TRUNC: opening must not erase the holder's record.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._wait_for(fd)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": self.command,
        }
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        logger.info("Run lock %s taken (pid %d).", self.path, os.getpid())

    def _wait_for(self, fd: int) -> None:
        start = time.monotonic()
        next_report = start
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            holder = describe_holder(read_holder(self.path))
            waited = time.monotonic() - start
            if self.mode == "fail":
                raise RunLockBusy(
                    f"Another run holds the run lock {self.path}: {holder}. Wait for it to finish, or set "
                    f"{ENV_MODE}=wait to queue behind it."
                )
            if waited >= self.timeout_s:
                raise RunLockTimeout(
                    f"Gave up after waiting {waited:.0f} s for the run lock {self.path}, held by {holder}. "
                    f"Raise {ENV_TIMEOUT} or stop that run."
                )
            if time.monotonic() >= next_report:
                logger.warning("Waiting for the run lock %s, held by %s (waited %.0f s).", self.path, holder, waited)
                next_report = time.monotonic() + self.report_every_s
            time.sleep(min(POLL_S, max(self.timeout_s - waited, 0.0)) or POLL_S)

    def release(self) -> None:
        """Give the lock up (the record is cleared so nobody is named as holder)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        logger.info("Run lock %s released.", self.path)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
