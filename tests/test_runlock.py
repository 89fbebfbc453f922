"""The run lock: one holder at a time, the holder named, released when the holder ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthmed.core.runlock import RunLock, RunLockBusy, RunLockTimeout, read_holder, settings_from_env

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Holds the lock, says so on stdout, then keeps it until its stdin closes (or it is killed).
HOLDER = """
import sys
from synthmed.core.runlock import RunLock
lock = RunLock(sys.argv[1], command="kedro run --pipelines extraction")
lock.acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def _holder(path: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": SRC})
    assert child.stdout.readline().strip() == "held"
    return child


def test_fail_fast_names_the_holder(tmp_path) -> None:
    path = tmp_path / "data/.locks/run.lock"
    child = _holder(path)
    try:
        with pytest.raises(RunLockBusy, match=rf"pid {child.pid} on .* running `kedro run --pipelines extraction`"):
            RunLock(path, mode="fail").acquire()
        assert read_holder(path)["pid"] == child.pid  # a failed contender does not erase the record
    finally:
        child.stdin.close()
        child.wait(10)


def test_a_waiter_reports_the_holder_and_proceeds_after_release(tmp_path, caplog) -> None:
    path = tmp_path / "run.lock"
    child = _holder(path)
    released_at = None

    def release_soon():
        nonlocal released_at
        time.sleep(1.0)
        released_at = time.monotonic()
        child.stdin.close()

    import threading

    threading.Thread(target=release_soon).start()
    with caplog.at_level("WARNING", logger="synthmed.core.runlock"):
        lock = RunLock(path, mode="wait", timeout_s=20, report_every_s=0.3)
        lock.acquire()
    acquired_at = time.monotonic()
    child.wait(10)
    assert released_at is not None and acquired_at >= released_at
    assert any(f"held by pid {child.pid}" in r.getMessage() for r in caplog.records)
    assert read_holder(path)["pid"] == os.getpid()
    lock.release()
    assert read_holder(path) is None


def test_a_killed_holder_releases_the_lock(tmp_path) -> None:
    path = tmp_path / "run.lock"
    child = _holder(path)
    child.kill()
    child.wait(10)
    with RunLock(path, mode="fail"):
        assert read_holder(path)["pid"] == os.getpid()


def test_waiting_gives_up_after_the_timeout(tmp_path) -> None:
    path = tmp_path / "run.lock"
    child = _holder(path)
    try:
        with pytest.raises(RunLockTimeout, match=rf"Gave up after waiting .* held by pid {child.pid}"):
            RunLock(path, mode="wait", timeout_s=0.5).acquire()
    finally:
        child.stdin.close()
        child.wait(10)


def test_settings_from_env() -> None:
    assert settings_from_env({}) == ("wait", 6 * 3600.0)
    assert settings_from_env({"SYNTHMED_LOCK": "fail", "SYNTHMED_LOCK_TIMEOUT_S": "5"}) == ("fail", 5.0)
    with pytest.raises(ValueError, match=r"SYNTHMED_LOCK='queue': expected one of \['wait', 'fail'\]"):
        settings_from_env({"SYNTHMED_LOCK": "queue"})
    with pytest.raises(ValueError, match=r"SYNTHMED_LOCK_TIMEOUT_S='soon'"):
        settings_from_env({"SYNTHMED_LOCK_TIMEOUT_S": "soon"})


def test_the_record_names_pid_host_start_and_command(tmp_path) -> None:
    path = tmp_path / "run.lock"
    with RunLock(path, command="kedro run"):
        record = json.loads(path.read_text())
    assert set(record) == {"pid", "host", "started", "command"} and record["command"] == "kedro run"


@pytest.mark.slow
def test_two_concurrent_kedro_runs_serialise_and_the_outputs_are_one_runs(tmp_path) -> None:
    """Two `kedro run --pipelines extraction` with different sizes, started together: one
    waits for the other (its log names the holder) and slices and patches come from the
    same run (before the lock, 1 try in 7 mixed them)."""
    import numpy as np

    from tests.conftest import _env, project_copy, sh

    project = project_copy(tmp_path / "project")
    sh("kedro", "run", "--pipelines", "sample_cohort", "--params", "sample_cohort.n_subjects=4", cwd=project)
    sh("kedro", "run", "--pipelines", "ingestion,preprocessing", cwd=project)
    runs = [
        subprocess.Popen(["kedro", "run", "--pipelines", "extraction", "--params",
                          f"extraction.slices.size_px={px},extraction.patches.patch.patch_px={px}"],
                         cwd=project, env=_env(COLUMNS="300"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for px in (16, 32)
    ]
    logs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs
    waited = [i for i, log in enumerate(logs) if "Waiting for the run lock" in log]
    assert len(waited) == 1, logs
    other = runs[1 - waited[0]]
    assert f"held by pid {other.pid}" in logs[waited[0]]
    sides = {np.load(project / f"data/05_model_input/{name}/arrays/images.npy", mmap_mode="r").shape[-1]
             for name in ("slices", "patches")}
    assert len(sides) == 1, f"slices and patches come from different runs: sizes {sides}"
