"""The shared trainer: checkpoints survive SIGKILL, resume exactly, and two processes train one model."""

from __future__ import annotations

import dataclasses
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
from synthmed.generators.registry import FAMILIES, config_from_params, get_family
from synthmed.generators.training import (
    ArrayBatches,
    TrainingConfig,
    checkpoint_dirs,
    latest_verified_checkpoint,
    train,
)

TINY_DCGAN = {"image_size": 16, "channels": 1, "num_classes": 2, "latent_dim": 8, "base_channels": 8}
# One tiny configuration per registered family (16 px, 1 channel, 2 classes where conditioned).
TINY = {
    "dcgan": TINY_DCGAN,
    "ddpm": {"image_size": 16, "channels": 1, "num_classes": 2, "conditioning": ["class"],
             "block_out_channels": [8, 16], "attention": False, "train_timesteps": 50, "ema_decay": 0.9},
    "pix2pix": {"image_size": 16, "channels": 1, "num_classes": 0, "base_channels": 8, "depth": 3},
}
ROOT = str(Path(__file__).resolve().parents[2])


def tiny_store(n: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = np.where(labels[:, None, None, None] == 0, -0.5, 0.5) + rng.normal(0, 0.1, (n, 1, 16, 16))
    return {"images": images.astype(np.float32), "labels": labels.astype(np.int64),
            "masks": (rng.uniform(size=(n, 1, 16, 16)) > 0.5).astype(np.uint8)}


def _train(root: Path, steps: int, checkpoint_every: int, on_step=None, family: str = "dcgan", n: int = 32,
           keep: int = 1, log_every: int = 5):
    spec = get_family(family)
    config = config_from_params(family, TINY[family])
    training = TrainingConfig(steps=steps, batch_size=4, seed=3, checkpoint_every=checkpoint_every,
                              log_every=log_every, device="cpu", keep_checkpoints=keep)
    return train(spec, config, training, ArrayBatches(tiny_store(n), np.arange(n)), root, on_step=on_step)


class Stop(Exception):
    """Raised from ``on_step`` to interrupt training like a crash would."""


def stop_at(step_to_stop: int):
    def on_step(step: int) -> None:
        if step == step_to_stop:
            raise Stop

    return on_step


def assert_same_weights(a: torch.nn.ModuleDict, b: torch.nn.ModuleDict) -> None:
    first, second = a.state_dict(), b.state_dict()
    assert list(first) == list(second)
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert different == [], f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_checkpoints_are_verified_and_pruned(tmp_path):
    _train(tmp_path, steps=12, checkpoint_every=4)
    dirs = checkpoint_dirs(tmp_path)
    assert [d.name for d in dirs] == ["step-000000012"]  # keep_checkpoints=1: older ones removed
    verify_checksums(dirs[0])
    (dirs[0] / "generator.safetensors").write_bytes(b"corrupt")
    assert latest_verified_checkpoint(tmp_path) is None


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_run_interrupted_mid_epoch_resumes_bit_for_bit(tmp_path, family):
    """Kill (an exception) after a mid-epoch checkpoint, resume: every weight, EMA copies
    included, equals an uninterrupted run's, and the history covers every step."""
    n, batch, steps, every = 24, 4, 10, 4
    steps_per_epoch = n // batch  # 6
    resume_step = 4  # the checkpoint the resumed run starts from
    assert resume_step % steps_per_epoch != 0  # mid-epoch: the resumed run must skip batches
    straight, straight_history = _train(tmp_path / "straight", steps, every, family=family, n=n, log_every=1)

    with pytest.raises(Stop):
        _train(tmp_path / "resumed", steps, every, on_step=stop_at(resume_step + 1), family=family, n=n, log_every=1)
    assert [d.name for d in checkpoint_dirs(tmp_path / "resumed")] == [f"step-{resume_step:09d}"]
    trained = []  # a run that silently restarted from scratch would also end equal: check it resumed
    resumed, history = _train(tmp_path / "resumed", steps, every, on_step=trained.append, family=family, n=n,
                              log_every=1)
    assert trained == list(range(resume_step + 1, steps + 1))

    if FAMILIES[family].ema_modules:
        assert any(name.endswith("_ema") for name in resumed), "the EMA copy must be among the compared modules"
    assert_same_weights(straight, resumed)
    assert [r["step"] for r in history] == list(range(1, steps + 1))
    losses = [{k: v for k, v in r.items() if k.startswith("loss")} for r in history]
    assert losses == [{k: v for k, v in r.items() if k.startswith("loss")} for r in straight_history]


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)  # as the test process (conftest): other thread counts round differently
    sys.path.insert(0, {root!r})
    from tests.generators.test_training import _train
    _train(Path(sys.argv[1]), steps=int(sys.argv[2]), checkpoint_every=5, on_step=lambda step: time.sleep(0.05))
    """
)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=ROOT))
    root, steps = tmp_path / "checkpoints", 60
    process = subprocess.Popen([sys.executable, str(script), str(root), str(steps)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and latest_verified_checkpoint(root) is None:
            if process.poll() is not None:
                pytest.fail(f"training exited early: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_at = int(latest_verified_checkpoint(root).name.split("-")[1])
    assert 0 < killed_at < steps

    # What a SIGKILL during a save leaves: a temporary folder of a process that is gone.
    stale = root / f".step-{killed_at + 5:09d}.tmp-{_dead_pid()}"
    stale.mkdir()
    (stale / "generator.safetensors").write_bytes(b"half written")

    trained = []
    resumed, history = _train(root, steps=steps, checkpoint_every=5, on_step=trained.append)
    assert trained[0] == killed_at + 1  # resumed, not restarted
    straight, straight_history = _train(tmp_path / "straight", steps=steps, checkpoint_every=5)
    assert_same_weights(straight, resumed)
    assert [r["step"] for r in history] == [r["step"] for r in straight_history]
    assert latest_verified_checkpoint(root).name == f"step-{steps:09d}"
    assert not stale.exists() and not list(root.glob(".step-*"))


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
LAUNCH_TIMEOUT_S = 240


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children before grandchildren."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop(0)
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL ``process``, its process group and every descendant: torchrun puts each rank in a
    session of its own, so killing torchrun's group alone leaves the ranks running."""
    members = _descendants(process.pid)
    for pid in (process.pid, *members):
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    process.wait(timeout=30)


def run_launched(command: list[str], timeout: float = LAUNCH_TIMEOUT_S, **popen: object) -> tuple[int, str]:
    """Run ``command`` in a session of its own, for at most ``timeout`` seconds; then kill it and every
    process below it (torchrun gives each rank a session of its own). Returns (status, output)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, **popen)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command[:6])} ... did not finish within {timeout} s (a hung rank?)")
    finally:
        kill_tree(process)
    return process.returncode, " ".join(output.split())


def test_two_cpu_processes_train_one_usable_model(tmp_path):
    """Two CPU processes (torchrun, which `accelerate launch` wraps): one model, gradients synced."""
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED.format(root=ROOT))
    launcher = Path(sys.executable).with_name("torchrun")
    code, log = run_launched([str(launcher), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert code == 0, log[-3000:]
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


class _CountingArray:
    """An array of the store that counts the reads made from it (a memory map stands behind it in a run)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.reads = array, 0
        self.shape = array.shape

    def __getitem__(self, index):
        self.reads += 1
        return self.array[index]


def test_a_loader_batch_is_one_read_per_array_with_the_values_of_single_reads() -> None:
    store = tiny_store(12)
    store["label_maps"] = (np.arange(12 * 256).reshape(12, 1, 16, 16) % 5).astype(np.uint8)
    counted = {name: _CountingArray(array) for name, array in store.items()}
    indices = np.array([9, 2, 7, 4, 11, 0])
    batches = ArrayBatches(counted, indices, size=8)
    positions = [3, 0, 5, 1]  # rows 4, 9, 0, 2 of the store: not in store order
    items = batches.__getitems__(positions)
    assert {name: a.reads for name, a in counted.items()} == dict.fromkeys(counted, 1)
    for position, item in zip(positions, items):  # the reference: one row, resized alone
        row = indices[position]

        def alone(array: np.ndarray, mode: str) -> torch.Tensor:
            return torch.nn.functional.interpolate(torch.from_numpy(array[None].astype(np.float32)), size=8,
                                                   mode=mode)[0]

        assert torch.equal(item["images"], alone(store["images"][row], "area"))
        assert torch.equal(item["masks"], alone((store["masks"][row] > 0).astype(np.float32), "nearest"))
        assert torch.equal(item["label_maps"], alone(store["label_maps"][row], "nearest").round().long())
        assert item["labels"].dtype == torch.int64 and int(item["labels"]) == store["labels"][row]
    assert torch.equal(batches[3]["images"], items[0]["images"])  # one item: the same values

    from torch.utils.data import DataLoader

    for array in counted.values():
        array.reads = 0
    loaded = list(DataLoader(batches, batch_size=3, shuffle=False))
    assert len(loaded) == 2 and counted["images"].reads == 2  # the DataLoader asks for whole batches
    assert torch.equal(loaded[1]["images"][0], batches[3]["images"])


def test_class_balanced_epochs_repeat_the_rare_class_up_to_the_largest() -> None:
    store = tiny_store(40)
    store["labels"] = (np.arange(40) >= 34).astype(np.int64)  # 34 of class 0, 6 of class 1 (rows 34-39)
    indices = np.array([39, 3, 36, 5, 7, 34, 9, 11, 13])  # 6 of class 0, 3 of class 1, not in store order
    batches = ArrayBatches(store, indices)
    assert batches.class_counts() == {0: 6, 1: 3}
    balanced = batches.class_balanced()
    assert balanced.class_counts() == {0: 6, 1: 6} and len(balanced) == 12
    rows = [int(balanced[i]["labels"]) for i in range(len(balanced))]
    assert rows.count(1) == 6
    # every row of the rare class twice, of the other once: nothing dropped, nothing drawn at random
    seen = sorted(int(np.flatnonzero((store["images"] == balanced[i]["images"].numpy()).all(axis=(1, 2, 3)))[0])
                  for i in range(len(balanced)))
    assert seen == sorted([3, 5, 7, 9, 11, 13, 34, 34, 36, 36, 39, 39])


def test_the_trainer_balances_classes_when_asked(tmp_path, caplog) -> None:
    store = tiny_store(24)
    store["labels"] = (np.arange(24) >= 20).astype(np.int64)  # 20 against 4
    spec, config = get_family("dcgan"), config_from_params("dcgan", TINY_DCGAN)
    seen: list[int] = []
    original = spec.train_step

    def counting(models, optimizers, batch, model_config, context):
        seen.extend(batch["labels"].tolist())
        return original(models, optimizers, batch, model_config, context)

    for balance in (False, True):
        seen.clear()
        training = TrainingConfig(steps=10, batch_size=4, seed=3, checkpoint_every=0, log_every=5, device="cpu",
                                  class_balance=balance)
        with caplog.at_level("INFO"):
            train(dataclasses.replace(spec, train_step=counting), config, training,
                  ArrayBatches(store, np.arange(24)), tmp_path / str(balance))
        share = seen.count(1) / len(seen)
        if balance:
            assert 0.35 <= share <= 0.65, share  # 40 draws from a 20 + 20 epoch
            assert "class-balanced epochs" in caplog.text
        else:
            assert share <= 0.3, share  # 4 of 24 rows


def test_class_balance_refuses_a_dataset_without_labels(tmp_path) -> None:
    spec, config = get_family("dcgan"), config_from_params("dcgan", TINY_DCGAN)
    training = TrainingConfig(steps=1, batch_size=2, device="cpu", class_balance=True)
    with pytest.raises(TypeError, match="class_balance needs a dataset that knows its labels"):
        train(spec, config, training, [{"images": torch.zeros(1, 16, 16)}] * 4, tmp_path)


def test_preview_rows_take_examples_of_their_own_class_spread_over_the_split() -> None:
    from synthmed.generators.previews import preview_conditions

    store = tiny_store(40)
    store["images"] = np.broadcast_to((np.arange(40, dtype=np.float32) / 40)[:, None, None, None], (40, 1, 16, 16))
    store["labels"] = np.zeros(40, dtype=np.int64)
    store["labels"][30:34] = 1  # the rare class: 4 rows late in store order
    config = config_from_params("ddpm", {**TINY["ddpm"], "conditioning": ["class", "inpaint"]})
    conditions = preview_conditions(config, store, np.arange(40)[::-1], per_class=3, num_classes=2)
    rows = (conditions.images.mean(dim=(1, 2, 3)) * 40).round().int().tolist()  # which store row each came from
    assert conditions.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # class 0 (36 rows): the middle of each third; class 1 (rows 30-33): likewise, not the split's first rows
    assert rows == [6, 18, 34, 30, 32, 33]


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto precision on the CPU only where torch sees no CUDA")
@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "no")])
def test_auto_precision_trains_in_bf16_only_on_cpus_with_amx_bf16(monkeypatch, native, expected):
    from synthmed.generators import precision
    from synthmed.generators.training import _accelerator

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    config = TrainingConfig(steps=1, batch_size=4, device="cpu")
    assert _accelerator(config).mixed_precision == expected


class RecordingTracker:
    """A ``Tracker`` that keeps what it is sent."""

    def __init__(self) -> None:
        self.params: list[dict[str, str]] = []
        self.metric_steps: list[int] = []

    def log_params(self, params) -> None:
        self.params.append(dict(params))

    def log_metrics(self, metrics, step: int) -> None:
        self.metric_steps.append(step)

    def log_samples(self, models, step: int) -> None:
        pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto precision on the CPU only where torch sees no CUDA")
@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "no")])
def test_the_tracker_records_what_auto_precision_became(tmp_path, monkeypatch, native, expected):
    """The parameters say ``auto`` for an fp32 and a bf16 run alike; the run's record must say which."""
    from synthmed.generators import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    tracker = RecordingTracker()
    training = TrainingConfig(steps=2, batch_size=4, seed=3, checkpoint_every=0, log_every=1, device="cpu")
    train(get_family("dcgan"), config_from_params("dcgan", TINY["dcgan"]), training,
          ArrayBatches(tiny_store(16), np.arange(16)), tmp_path, tracker=tracker)
    assert tracker.params == [{"mixed_precision": expected, "device": "cpu", "processes": "1"}]
    assert tracker.metric_steps == [1, 2]


def test_one_process_trains_families_at_different_precisions(tmp_path):
    """Accelerate keeps one state per process: a run that trains one family in bf16 and the next
    in fp32 (a profile with ``no`` beside ``auto`` on an AMX CPU or a GPU) must not stop."""
    spec = get_family("dcgan")
    config = config_from_params("dcgan", TINY["dcgan"])
    store = tiny_store(16)
    for k, mixed in enumerate(("bf16", "no", "bf16")):
        training = TrainingConfig(steps=2, batch_size=4, seed=3, checkpoint_every=0, log_every=1, device="cpu",
                                  mixed_precision=mixed)
        tracker = RecordingTracker()
        models, _ = train(spec, config, training, ArrayBatches(store, np.arange(16)), tmp_path / str(k),
                          tracker=tracker)
        assert all(torch.isfinite(p).all() for p in models.parameters())
        assert tracker.params[0]["mixed_precision"] == mixed


def test_models_trained_in_bf16_come_back_in_the_callers_precision(tmp_path):
    """Accelerate wraps a module's forward in autocast under mixed precision; the trained models
    handed back must compute like a copy loaded from their weights (fp32 on the CPU)."""
    spec = get_family("dcgan")
    config = config_from_params("dcgan", TINY["dcgan"])
    training = TrainingConfig(steps=2, batch_size=4, seed=3, checkpoint_every=0, log_every=1, device="cpu",
                              mixed_precision="bf16")
    models, _ = train(spec, config, training, ArrayBatches(tiny_store(16), np.arange(16)), tmp_path)
    loaded = spec.build(config, 0)
    loaded.load_state_dict(models.state_dict())
    loaded.eval()
    z = torch.randn(4, TINY["dcgan"]["latent_dim"], generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        assert torch.equal(models["generator"](z, labels), loaded["generator"](z, labels))
