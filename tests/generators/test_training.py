"""The shared trainer: checkpoints survive SIGKILL, resume exactly, and two processes train one model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmed.generators.common import verify_checksums
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.training import (
    ArrayBatches,
    TrainingConfig,
    checkpoint_dirs,
    latest_verified_checkpoint,
    train,
)

TINY_DCGAN = {"image_size": 16, "channels": 1, "num_classes": 2, "latent_dim": 8, "base_channels": 8}


def tiny_store(n: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = np.where(labels[:, None, None, None] == 0, -0.5, 0.5) + rng.normal(0, 0.1, (n, 1, 16, 16))
    return {"images": images.astype(np.float32), "labels": labels.astype(np.int64),
            "masks": (rng.uniform(size=(n, 1, 16, 16)) > 0.5).astype(np.uint8)}


def _train(root: Path, steps: int, checkpoint_every: int, on_step=None):
    spec = get_family("dcgan")
    config = config_from_params("dcgan", TINY_DCGAN)
    store = tiny_store()
    training = TrainingConfig(steps=steps, batch_size=4, seed=3, checkpoint_every=checkpoint_every, log_every=5,
                              device="cpu")
    return train(spec, config, training, ArrayBatches(store, np.arange(32)), root, on_step=on_step)


def test_checkpoints_are_verified_and_pruned(tmp_path):
    _train(tmp_path, steps=12, checkpoint_every=4)
    dirs = checkpoint_dirs(tmp_path)
    assert [d.name for d in dirs] == ["step-000000012"]  # keep_checkpoints=1: older ones removed
    verify_checksums(dirs[0])
    (dirs[0] / "generator.safetensors").write_bytes(b"corrupt")
    assert latest_verified_checkpoint(tmp_path) is None


def test_resume_continues_where_it_stopped_and_matches_an_uninterrupted_run(tmp_path):
    straight, _ = _train(tmp_path / "straight", steps=16, checkpoint_every=4)

    class Stop(Exception):
        pass

    def stop_after_9(step: int) -> None:
        if step == 9:
            raise Stop

    with pytest.raises(Stop):
        _train(tmp_path / "resumed", steps=16, checkpoint_every=4, on_step=stop_after_9)
    assert latest_verified_checkpoint(tmp_path / "resumed").name == "step-000000008"
    resumed, history = _train(tmp_path / "resumed", steps=16, checkpoint_every=4)
    assert history[0]["step"] == 10  # continued from step 8, first log at step 10
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.generators.test_training import _train
    _train(Path(sys.argv[1]), steps=400, checkpoint_every=5, on_step=lambda step: time.sleep(0.02))
    """
)


def test_sigkill_mid_run_then_resume_finishes(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=str(Path(__file__).resolve().parents[2])))
    root = tmp_path / "checkpoints"
    process = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and latest_verified_checkpoint(root) is None:
        if process.poll() is not None:
            pytest.fail(f"training exited early: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = int(latest_verified_checkpoint(root).name.split("-")[1])
    assert 0 < killed_at < 400

    models, history = _train(root, steps=killed_at + 10, checkpoint_every=5)
    assert history[0]["step"] > killed_at
    assert latest_verified_checkpoint(root).name == f"step-{killed_at + 10:09d}"
    assert not list(root.glob(".step-*"))  # no temporary folder survives a successful save


LAUNCHED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    sys.path.insert(0, {root!r})
    from accelerate import PartialState
    from tests.generators.test_training import _train
    root = Path(sys.argv[1])
    models, _ = _train(root, steps=6, checkpoint_every=0)
    rank = PartialState().process_index
    torch.save({{k: v.clone() for k, v in models.state_dict().items()}}, root / f"weights-{{rank}}.pt")
    """
)


def test_two_cpu_processes_train_one_usable_model(tmp_path):
    """Two CPU processes (torchrun, which `accelerate launch` wraps): one model, gradients synced."""
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED.format(root=str(Path(__file__).resolve().parents[2])))
    launcher = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(launcher), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first = torch.load(tmp_path / "weights-0.pt", weights_only=True)
    second = torch.load(tmp_path / "weights-1.pt", weights_only=True)
    trainable = [k for k in first if "running" not in k and "num_batches" not in k]
    assert trainable and all(torch.equal(first[k], second[k]) for k in trainable)  # gradients were synced
    single, _ = _train(tmp_path / "single", steps=6, checkpoint_every=0)
    assert not all(torch.equal(first[k], single.state_dict()[k]) for k in trainable)  # 2 x batch is not 1 x batch

    from synthmed.generators.base import Conditions, SamplerSpec
    from synthmed.generators.registry import load_generator

    spec, config, models = load_generator(latest_verified_checkpoint(tmp_path))
    images = spec.sample(models, config, Conditions(n=4, labels=torch.tensor([0, 1, 0, 1])), SamplerSpec(),
                         torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 16, 16) and torch.isfinite(images).all()
