"""`kedro run --pipelines training` SIGKILLed mid-run, rerun: the saved generator is the same,
bit for bit, as an uninterrupted run's, and no temporary checkpoint folder survives."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import _env, project_catalog, project_copy, run, use_toy_parameters, write_source_folder
from tests.generators.test_training import _dead_pid

pytestmark = pytest.mark.slow
STEPS = 300  # dcgan at 16 px: a few ms a step; long enough to be killed mid-run
KILL_TIMEOUT_S = 300


def _kedro_training(project: Path, checkpoint_root: str) -> list[str]:
    params = (f"dcgan.training.steps={STEPS},dcgan.training.checkpoint_every=5,dcgan.training.log_every=5,"
              f"dcgan.run.checkpoint_root={checkpoint_root}")
    return ["kedro", "run", "--pipelines", "training", "--namespaces", "dcgan", "--params", params]


def _weights(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*.safetensors"))}


def test_a_killed_kedro_training_run_resumes_to_the_same_generator(tmp_path):
    project = project_copy(tmp_path / "project")
    use_toy_parameters(project)  # the Kedro run below reads conf/test: the toy folder's classes
    write_source_folder(tmp_path / "source")
    from synthmed.pipelines import extraction, ingestion, preprocessing

    # The training inputs, written where the project's catalog reads them (in-process: faster).
    catalog = project_catalog(project, tmp_path / "source", overrides={"ingestion": {"max_rejection_rate": 0.5}})
    run(ingestion.create_pipeline() + preprocessing.create_pipeline() + extraction.create_pipeline(), catalog)
    env = _env(OMP_NUM_THREADS="1", COLUMNS="1000")  # COLUMNS: rich logs one line per record
    checkpoints = project / "data/06_models/checkpoints"

    process = subprocess.Popen(_kedro_training(project, "data/06_models/checkpoints"), cwd=project, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while time.monotonic() < deadline and not list(checkpoints.glob("dcgan-*/step-*/checksums.json")):
            if process.poll() is not None:
                pytest.fail(f"kedro exited before a checkpoint existed: {process.stderr.read()[-3000:]}")
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    (run_dir,) = checkpoints.glob("dcgan-*")
    killed_at = max(int(p.name.split("-")[1]) for p in run_dir.glob("step-*"))
    assert 0 < killed_at < STEPS, "the kill came too late to test a resume"
    assert not (project / "data/06_models/dcgan/checksums.json").exists()
    stale = run_dir / f".step-{killed_at + 5:09d}.tmp-{_dead_pid()}"  # as a kill during a save leaves
    stale.mkdir()
    (stale / "generator.safetensors").write_bytes(b"half written")

    rerun = subprocess.run(_kedro_training(project, "data/06_models/checkpoints"), cwd=project, env=env,
                           capture_output=True, text=True, timeout=KILL_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = " ".join((rerun.stdout + rerun.stderr).split())
    assert "Resuming dcgan training from" in log and f"step-{killed_at:09d} (step {killed_at} of {STEPS})" in log
    assert not stale.exists() and not list(run_dir.glob(".step-*"))
    resumed = _weights(project / "data/06_models/dcgan")
    history = (project / "data/08_reporting/training/dcgan_history.csv").read_text().splitlines()
    shutil.rmtree(project / "data/06_models/dcgan")

    straight = subprocess.run(_kedro_training(project, "data/06_models/checkpoints_straight"), cwd=project,
                              env=env, capture_output=True, text=True, timeout=KILL_TIMEOUT_S)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "Resuming" not in straight.stdout + straight.stderr
    assert resumed and resumed == _weights(project / "data/06_models/dcgan")
    straight_history = (project / "data/08_reporting/training/dcgan_history.csv").read_text().splitlines()
    assert len(history) == len(straight_history) == STEPS // 5 + 1  # header + every logged step
    assert [r.split(",")[0] for r in history] == [r.split(",")[0] for r in straight_history]
