"""One training loop for every family, on HuggingFace Accelerate.

The same code runs on CPU, one GPU (bf16 autocast) and several GPUs or CPU processes
(``accelerate launch``): Accelerate places the models and batches, wraps trainable modules
for data parallelism, scales the loss and syncs gradients. The family supplies the
optimisation step (``FamilySpec.train_step``); this module owns everything around it:

1. data: batches read from an ``ArrayStore`` (memory-mapped; never all in memory), in an
   order fixed by the seed and the epoch, so a resumed run sees the same batches;
2. EMA of the modules a family names (``ema_modules``);
3. checkpoints every ``checkpoint_every`` steps, written to a temporary folder, checksummed
   last, renamed into place and verified; older checkpoints are removed only after the new
   one verifies; a run resumes from the newest checkpoint that verifies;
4. a progress bar with the losses and images/s, and metrics/sample grids for a tracker.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from synthmed.generators.base import FamilySpec, StepContext
from synthmed.generators.common import (
    CheckpointError,
    ema_update,
    load_weights,
    verify_checksums,
    write_checksums,
    write_generator_files,
)

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.pt"
_CHECKPOINT_PREFIX = "step-"


@dataclass(frozen=True)
class TrainingConfig:
    """``params:<family>.training``.

    Args:
        steps: optimisation steps in total (a resumed run continues up to this number).
        batch_size: images per step and per process.
        seed: seeds the weights, the data order and the family's random draws.
        checkpoint_every: steps between checkpoints (0 = only the final one).
        log_every: steps between metric records.
        sample_every: steps between sample grids sent to the tracker (0 = none).
        mixed_precision: "auto" (bf16 on CUDA, none elsewhere), "no", "bf16" or "fp16".
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda" or "mps".
        num_workers: DataLoader worker processes.
        keep_checkpoints: how many verified checkpoints to keep (>= 1).
    """

    steps: int
    batch_size: int
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 25
    sample_every: int = 0
    mixed_precision: str = "auto"
    device: str = "auto"
    num_workers: int = 0
    keep_checkpoints: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"training.steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}.")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"training.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}.")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"training.device must be auto, cpu, cuda or mps, got {self.device!r}.")
        if self.keep_checkpoints < 1 or self.checkpoint_every < 0 or self.log_every < 1:
            raise ValueError("training.keep_checkpoints and log_every must be >= 1, checkpoint_every >= 0.")


class Tracker(Protocol):
    """Where metrics and sample grids go (MLflow in the pipeline; None in tests)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_samples(self, models: nn.ModuleDict, step: int) -> None: ...


class ArrayBatches(Dataset):
    """Examples ``indices`` of an array store with ``images``, ``labels`` and ``masks``.

    Items are ``{"images": (C, S, S) float32 in [-1, 1], "labels": () int64,
    "masks": (1, S, S) float32 in {0, 1}}``, read from memory maps one at a time. With
    ``size`` smaller than the stored size, images are area-averaged and masks
    nearest-sampled down to ``size`` (a CPU model can train on 32 px from 64 px slices).
    """

    def __init__(self, store: Mapping[str, np.ndarray], indices: np.ndarray, size: int | None = None):
        missing = {"images", "labels", "masks"} - set(store)
        if missing:
            raise ValueError(f"The training array store lacks {sorted(missing)}; expected images, labels and masks.")
        self._store = store
        self._indices = np.asarray(indices, dtype=np.int64)
        if len(self._indices) == 0:
            raise ValueError("No training examples: the train split is empty (check the split and class filters).")
        stored = int(store["images"].shape[-1])
        self._size = stored if size is None else int(size)
        if self._size > stored or stored % self._size:
            raise ValueError(
                f"Training image size {self._size} must divide the stored size {stored} (downsampling only)."
            )

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self._indices[i])
        images = torch.from_numpy(np.array(self._store["images"][j], dtype=np.float32))
        masks = torch.from_numpy((np.asarray(self._store["masks"][j]) > 0).astype(np.float32))
        if self._size != images.shape[-1]:
            images = torch.nn.functional.interpolate(images[None], size=self._size, mode="area")[0]
            masks = torch.nn.functional.interpolate(masks[None], size=self._size, mode="nearest")[0]
        return {"images": images, "labels": torch.tensor(int(self._store["labels"][j]), dtype=torch.int64),
                "masks": masks}


# ------------------------------------------------------------------ checkpoints


def checkpoint_dirs(root: Path) -> list[Path]:
    """Checkpoint folders under ``root``, newest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(_CHECKPOINT_PREFIX)), reverse=True)


def latest_verified_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint whose checksums verify; broken ones are skipped with a warning."""
    for folder in checkpoint_dirs(root):
        try:
            verify_checksums(folder)
            return folder
        except CheckpointError as exc:
            logger.warning("Skipping checkpoint %s: %s", folder.name, exc)
    return None


def save_checkpoint(root: Path, step: int, spec: FamilySpec, config: Any, models: nn.ModuleDict,
                    trainer_state: dict[str, Any], keep: int) -> Path:
    """Write, checksum, rename and verify a checkpoint; then prune older ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_CHECKPOINT_PREFIX}{step:09d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_generator_files(tmp, spec.name, config, models)
    torch.save(trainer_state, tmp / TRAINER_STATE)
    write_checksums(tmp)  # last: a folder without it is an interrupted save
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    verify_checksums(final)
    for old in checkpoint_dirs(root)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".{_CHECKPOINT_PREFIX}*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_trainer_state(folder: Path) -> dict[str, Any]:
    """The optimiser, RNG and step state of a verified checkpoint (``weights_only``: no pickle)."""
    return torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------ the loop


def _accelerator(config: TrainingConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = torch.cuda.is_available() and config.device in ("auto", "cuda")
    mps = not cuda and torch.backends.mps.is_available() and config.device in ("auto", "mps")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available.")
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if cuda else "no"
    # GAN steps use a module in one loss and not in the other: let DDP allow unused parameters.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=not (cuda or mps), mixed_precision=precision, kwargs_handlers=[ddp])


def _epoch_loader(dataset: Dataset, config: TrainingConfig, epoch: int) -> DataLoader:
    order = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True, generator=order,
                      num_workers=config.num_workers)


def train(
    spec: FamilySpec,
    model_config: Any,
    config: TrainingConfig,
    dataset: Dataset,
    checkpoint_root: Path,
    *,
    tracker: Tracker | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[nn.ModuleDict, list[dict[str, float]]]:
    """Train ``spec`` on ``dataset`` for ``config.steps`` steps, resuming if a checkpoint exists.

    Args:
        spec: the family.
        model_config: the family's ``Config``.
        config: the training settings.
        dataset: examples as produced by ``ArrayBatches``.
        checkpoint_root: folder of this run's checkpoints (``step-*``).
        tracker: receives metrics every ``log_every`` steps and sample grids.
        on_step: called with the global step after each step (tests use it to interrupt).

    Returns:
        ``(models, history)``: the trained modules (unwrapped, on CPU, eval mode) and one
        record per logged step (``step``, the losses, ``lr``, ``images_per_s``).
    """
    accelerator = _accelerator(config)
    if len(dataset) < config.batch_size:
        raise ValueError(f"The train split has {len(dataset)} examples, fewer than batch_size={config.batch_size}.")
    models = spec.build(model_config, config.seed)
    optimizers = spec.make_optimizers(models, model_config)
    generator = torch.Generator(device=accelerator.device).manual_seed(config.seed + accelerator.process_index)

    start = 0
    resume = latest_verified_checkpoint(checkpoint_root)
    if resume is not None:
        load_weights(resume, models)
        state = load_trainer_state(resume)
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        generator.set_state(state["generator"][accelerator.process_index % len(state["generator"])].to(torch.uint8))
        start = int(state["step"])
        logger.info("Resuming %s training from %s (step %d of %d)", spec.name, resume.name, start, config.steps)

    trainable = list(optimizers)
    for name in trainable:
        models[name] = accelerator.prepare(models[name])
    for name in list(optimizers):
        optimizers[name] = accelerator.prepare(optimizers[name])
    for name in models:
        if name not in trainable:
            models[name].to(accelerator.device)
    clip_norm = getattr(model_config, "grad_clip_norm", None)
    ema_decay = getattr(model_config, "ema_decay", 0.999)

    def clip(parameters: Any) -> None:
        if clip_norm:
            accelerator.clip_grad_norm_(parameters, clip_norm)

    steps_per_epoch = len(dataset) // (config.batch_size * accelerator.num_processes)
    history: list[dict[str, float]] = []
    progress = tqdm(total=config.steps, initial=start, desc=f"training {spec.name}", unit="step",
                    disable=not accelerator.is_main_process or None)
    step = start
    tic, images_seen = time.perf_counter(), 0
    models.train()
    while step < config.steps:
        epoch = step // steps_per_epoch
        loader = accelerator.prepare(_epoch_loader(dataset, config, epoch))
        loader = accelerator.skip_first_batches(loader, step - epoch * steps_per_epoch)
        for batch in loader:
            context = StepContext(backward=accelerator.backward, clip=clip, generator=generator,
                                  autocast=accelerator.autocast, step=step)
            losses = spec.train_step(models, optimizers, batch, model_config, context)
            for name in spec.ema_modules:
                ema_update(models[f"{name}_ema"], accelerator.unwrap_model(models[name]), ema_decay)
            step += 1
            images_seen += batch["images"].shape[0] * accelerator.num_processes
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"{spec.name} training diverged at step {step}: losses {losses}.")
            if step % config.log_every == 0 or step == config.steps:
                elapsed = time.perf_counter() - tic
                record = {"step": step, **losses, "lr": optimizers[trainable[0]].param_groups[0]["lr"],
                          "images_per_s": images_seen / elapsed if elapsed > 0 else 0.0}
                history.append(record)
                progress.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"})
                if accelerator.is_main_process:  # the bar is silent without a terminal (DVC, logs)
                    logger.info("%s step %d/%d %s", spec.name, step, config.steps,
                                " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step"))
                if tracker is not None and accelerator.is_main_process:
                    tracker.log_metrics({k: v for k, v in record.items() if k != "step"}, step)
                tic, images_seen = time.perf_counter(), 0
            progress.update(1)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                _checkpoint(accelerator, checkpoint_root, step, spec, model_config, models, optimizers, generator,
                            config.keep_checkpoints)
            if tracker is not None and config.sample_every and step % config.sample_every == 0 \
                    and accelerator.is_main_process:
                tracker.log_samples(_unwrapped(accelerator, models), step)
            if on_step is not None:
                on_step(step)
            if step >= config.steps:
                break
    progress.close()
    _checkpoint(accelerator, checkpoint_root, step, spec, model_config, models, optimizers, generator,
                config.keep_checkpoints)
    final = _unwrapped(accelerator, models).to("cpu").eval()
    accelerator.end_training()
    return final, history


def _unwrapped(accelerator: Any, models: nn.ModuleDict) -> nn.ModuleDict:
    return nn.ModuleDict({name: accelerator.unwrap_model(module) for name, module in models.items()})


def _checkpoint(accelerator: Any, root: Path, step: int, spec: FamilySpec, model_config: Any,
                models: nn.ModuleDict, optimizers: dict[str, Any], generator: torch.Generator, keep: int) -> None:
    states = accelerator.gather(generator.get_state().to(torch.int64).to(accelerator.device)[None]).cpu()
    if accelerator.is_main_process:
        trainer_state = {
            "step": step,
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "generator": [s.to(torch.uint8) for s in states.reshape(accelerator.num_processes, -1)],
        }
        save_checkpoint(root, step, spec, model_config, _unwrapped(accelerator, models), trainer_state, keep)
    accelerator.wait_for_everyone()
