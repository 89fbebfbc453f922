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
   one verifies; a run resumes from the newest checkpoint whose every part loads (weights,
   EMA copies, optimisers, RNG states, loss history), with a warning for each one skipped;
   a failed write (full disk) is logged, never loses the models in memory;
4. a progress bar with the losses and images/s, and metrics/sample grids for a tracker.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import functools
import io
import json
import logging
import math
import os
import pickle
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from safetensors import SafetensorError
from tqdm.auto import tqdm

from synthmed.core.lazy import lazy_import
from synthmed.core.progress import ProgressLog
from synthmed.generators.base import FamilySpec, StepContext, label_map_array
from synthmed.generators.common import (
    CHECKSUMS,
    MANIFEST,
    WRITE_FAILURES,
    CheckpointError,
    CheckpointWriteError,
    as_write_error,
    ema_update,
    free_bytes,
    load_weights,
    read_manifest,
    state_nbytes,
    verify_checksums,
    weights_file,
    write_checksums,
    write_generator_files,
)
from synthmed.generators.precision import auto_bf16

if TYPE_CHECKING:
    from torch.utils.data import DataLoader, Dataset

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
torch = lazy_import("torch")
nn = lazy_import("torch.nn")

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.pt"
HISTORY = "history.json"
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
        mixed_precision: "auto" (bf16 on CUDA and on CPUs with AMX-BF16, none elsewhere:
            ``synthmed.generators.precision``), "no", "bf16" or "fp16".
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda" or "mps".
        num_workers: DataLoader worker processes.
        keep_checkpoints: how many verified checkpoints to keep (>= 1).
        class_balance: every class as often as the largest one in each epoch: the rows of the
            smaller classes are repeated (``ArrayBatches.class_balanced``). A rare class (the
            cohort's lesion slices, 7% of the train split) is otherwise seen about once per
            batch, and a class-conditional GAN learns little more than one image of it.
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
    class_balance: bool = False

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
    """Where metrics, sample grids and the run's resolved settings go (MLflow in the pipeline; None in
    most tests and whenever no MLflow run is active)."""

    def log_params(self, params: Mapping[str, str]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_samples(self, models: nn.ModuleDict, step: int) -> None: ...


class ArrayBatches:  # a map-style torch Dataset (__len__, __getitem__); no base: torch at import
    """Examples ``indices`` of an array store with ``images``, ``labels`` and ``masks``.

    Items are ``{"images": (C, *S) float32 in [-1, 1], "labels": () int64, "masks": (1, *S)
    float32 in {0, 1}}``, with ``*S`` the stored sides: ``(S, S)`` for images, ``(S, S, S)``
    for volumes (a store of ``(N, C, D, H, W)`` arrays). A store that also holds
    ``label_maps`` (``(N, 1, *S)`` integer tissue labels) adds ``"label_maps": (1, *S)``
    int64. With ``size`` smaller than the stored side, images are area-averaged and masks
    and label maps nearest-sampled down to ``size`` on every side (a CPU model can train on
    32 px from 64 px slices).

    A ``DataLoader`` asks for a whole batch at once (``__getitems__``): its rows are read from
    the memory maps in one indexed read per array, in store order, and resized in one call,
    the same values as item by item (``__getitem__``) at a fraction of the per-item cost.
    ``training.num_workers`` moves this work to worker processes as well.
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

    def class_counts(self) -> dict[int, int]:
        """Examples per stored label, this dataset's rows counted as often as they occur."""
        values, counts = np.unique(self._labels(), return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def class_balanced(self) -> ArrayBatches:
        """The same examples with every class's rows repeated, in turn, up to the largest class's count.

        Deterministic (no draw): a class of ``k`` rows against a largest class of ``m`` has each
        row ``m // k`` or ``m // k + 1`` times; the trainer's seeded shuffle mixes them.
        """
        labels = self._labels()
        groups = [self._indices[labels == value] for value in np.unique(labels)]
        largest = max(len(group) for group in groups)
        return ArrayBatches(self._store, np.concatenate([np.resize(group, largest) for group in groups]), self._size)

    def _labels(self) -> np.ndarray:
        order = np.argsort(self._indices, kind="stable")  # read in store order, as __getitems__ does
        labels = np.empty(len(self._indices), dtype=np.int64)
        labels[order] = np.asarray(self._store["labels"][self._indices[order]]).reshape(-1)
        return labels

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        rows = self._indices[np.asarray(positions, dtype=np.int64)]
        order = np.argsort(rows, kind="stable")  # read in store order: sequential pages of the memory maps
        back = torch.from_numpy(np.argsort(order, kind="stable"))

        def read(name: str) -> np.ndarray:
            return np.asarray(self._store[name][rows[order]])

        def batch(array: np.ndarray, mode: str) -> torch.Tensor:
            values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            if self._size != values.shape[-1]:  # interpolate takes (N, C, *S): 2D or 3D alike
                values = torch.nn.functional.interpolate(values, size=self._size, mode=mode)
            return values[back]

        columns = {"images": batch(read("images"), "area"),
                   "labels": torch.from_numpy(read("labels").astype(np.int64))[back],
                   "masks": batch((read("masks") > 0).astype(np.float32), "nearest")}
        label_maps = np.asarray(label_map_array(self._store)[rows[order]], dtype=np.float32)
        columns["label_maps"] = batch(label_maps, "nearest").round().to(torch.int64)
        return [{name: values[k] for name, values in columns.items()} for k in range(len(rows))]


# ------------------------------------------------------------------ checkpoints
#
# A checkpoint folder ``step-<n>`` holds the generator files (weights of every module, EMA
# copies included, and generator.json), ``trainer_state.pt`` (optimisers, random generator
# states, step: tensors and plain containers, loaded with ``weights_only``), ``history.json``
# (the logged records up to step n, so a resumed run reports every step) and checksums.json,
# written last.


def checkpoint_dirs(root: Path) -> list[Path]:
    """Checkpoint folders under ``root``, newest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(_CHECKPOINT_PREFIX)), reverse=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**22  # someone else's process (or an absurd pid: treat as gone)
    return True


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Remove the temporary folders that interrupted saves left under ``root``.

    A folder ``.step-<n>.tmp-<pid>`` (or ``.old-<pid>``) belongs to a save by process
    ``pid``; it is stale when that process is this one or no longer exists. A full disk
    that killed a save left such a folder behind; removing it at start lets a rerun succeed
    once space is freed.
    """
    removed = []
    for folder in sorted(root.glob(f".{_CHECKPOINT_PREFIX}*")) if root.is_dir() else []:
        owner = folder.name.rpartition("-")[2]
        if ".tmp-" not in folder.name and ".old-" not in folder.name:
            continue
        if owner.isdigit() and int(owner) != os.getpid() and _pid_alive(int(owner)):
            continue  # another live process is saving here right now
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        logger.info("Removed %d temporary folder(s) left by interrupted checkpoint saves in %s", len(removed), root)
    return removed


def latest_verified_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint whose checksums verify; broken ones are skipped with a warning."""
    for folder in checkpoint_dirs(root):
        try:
            verify_checksums(folder)
            return folder
        except _UNREADABLE as exc:
            logger.warning("Skipping checkpoint %s: %s", folder, _describe(folder, exc))
    return None


def save_checkpoint(root: Path, step: int, spec: FamilySpec, config: Any, models: nn.ModuleDict,
                    trainer_state: dict[str, Any], keep: int, history: list[dict[str, float]] | None = None) -> Path:
    """Write, checksum, rename and verify a checkpoint; then prune older ones.

    Raises:
        CheckpointWriteError: the filesystem refused a write (full disk: the message names
            the folder, the bytes needed and the bytes free). The temporary folder is
            removed and the previous checkpoints are untouched.
    """
    final = root / f"{_CHECKPOINT_PREFIX}{step:09d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    buffer = io.BytesIO()
    torch.save(trainer_state, buffer)
    state_bytes = buffer.getvalue()
    history_bytes = (json.dumps(history or [], indent=0) + "\n").encode()
    needed = state_nbytes(models) + len(state_bytes) + len(history_bytes)
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = free_bytes(root)
        if free is not None and free < needed:  # fail before writing anything
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root))
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write_generator_files(tmp, spec.name, config, models)
        (tmp / TRAINER_STATE).write_bytes(state_bytes)
        (tmp / HISTORY).write_bytes(history_bytes)
        write_checksums(tmp)  # last: a folder without it is an interrupted save
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, CheckpointWriteError):  # from write_generator_files: name the checkpoint instead
            raise CheckpointWriteError(final, needed, free_bytes(root), exc.__cause__ or exc) from exc
        error = as_write_error(final, needed, exc) if isinstance(exc, WRITE_FAILURES) else exc
        if error is exc:
            raise
        raise error from exc
    # Same step saved again (a rerun that resumed at the last step): move the old folder
    # aside rather than deleting it first, so a kill in between still leaves a checkpoint.
    aside = root / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, aside)
    os.replace(tmp, final)
    verify_checksums(final)
    shutil.rmtree(aside, ignore_errors=True)
    for old in checkpoint_dirs(root)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    remove_stale_temporaries(root)
    return final


def load_trainer_state(folder: Path) -> dict[str, Any]:
    """The optimiser, RNG and step state of a verified checkpoint (``weights_only``: no pickle)."""
    return torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)


def load_history(folder: Path) -> list[dict[str, float]]:
    """The logged records stored in a checkpoint (``[]`` for checkpoints written before history.json)."""
    path = folder / HISTORY
    if not path.is_file():
        logger.warning("Checkpoint %s has no %s: the returned history starts at the resume step.", folder, HISTORY)
        return []
    records = json.loads(path.read_text())
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("step"), int)
                                                for r in records):
        raise CheckpointError(f"{path} is not a list of records with an integer 'step'.")
    return records


# Everything an unreadable or inconsistent checkpoint raises while it is verified and
# loaded; anything else is a bug and propagates.
_UNREADABLE = (CheckpointError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError,
               RuntimeError, SafetensorError, pickle.UnpicklingError, EOFError)


def _describe(folder: Path, exc: BaseException) -> str:
    text = str(exc)
    return text if str(folder) in text else f"{type(exc).__name__}: {text}"


@dataclass
class Restored:
    """What a checkpoint holds, loaded into fresh modules and optimisers."""

    folder: Path
    step: int
    models: nn.ModuleDict
    optimizers: dict[str, torch.optim.Optimizer]
    generator_states: list[torch.Tensor]
    history: list[dict[str, float]]


def restore_checkpoint(folder: Path, spec: FamilySpec, model_config: Any, seed: int) -> Restored:
    """Load every part of ``folder`` and check it against this run; raise if anything is off.

    Raises:
        CheckpointError (or the reader's own error): a part is missing, unreadable or
            belongs to another model.
    """
    with _reading(folder / CHECKSUMS):
        verify_checksums(folder)
    with _reading(folder / MANIFEST):
        manifest = read_manifest(folder)
    expected_config = json.loads(json.dumps(dataclasses.asdict(model_config)))
    if manifest.get("family") != spec.name or manifest.get("config") != expected_config:
        raise CheckpointError(f"{folder / MANIFEST} describes family {manifest.get('family')!r} with another "
                              f"config than this run ({spec.name}).")
    models = spec.build(model_config, seed)
    if manifest.get("modules") != list(models):
        raise CheckpointError(f"{folder / MANIFEST} lists modules {manifest.get('modules')}, expected {list(models)}.")
    for name, module in models.items():  # one at a time, so that the warning names the file
        with _reading(weights_file(folder, name, module)):
            load_weights(folder, nn.ModuleDict({name: module}))
    optimizers = spec.make_optimizers(models, model_config)
    with _reading(folder / TRAINER_STATE):
        state = load_trainer_state(folder)
        if not isinstance(state, dict) or not {"step", "optimizers", "generator"} <= set(state):
            raise CheckpointError(f"{folder / TRAINER_STATE} lacks step, optimizers or generator.")
        step = int(state["step"])
        if f"{_CHECKPOINT_PREFIX}{step:09d}" != folder.name:
            raise CheckpointError(f"{folder / TRAINER_STATE} is at step {step}, the folder name says otherwise.")
        if set(state["optimizers"]) != set(optimizers):
            raise CheckpointError(f"{folder / TRAINER_STATE} has optimisers {sorted(state['optimizers'])}, "
                                  f"expected {sorted(optimizers)}.")
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            _check_optimizer_shapes(folder, name, optimizer)
        states = list(state["generator"])
        if not states:
            raise CheckpointError(f"{folder / TRAINER_STATE} holds no random generator state.")
        for s in states:
            torch.Generator().set_state(s.to(torch.uint8))  # raises on a malformed state
    with _reading(folder / HISTORY):
        history = load_history(folder)
    if any(r["step"] > step for r in history):
        raise CheckpointError(f"{folder / HISTORY} has records after the checkpoint's step {step}.")
    return Restored(folder, step, models, optimizers, states, history)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Errors of a reader become a ``CheckpointError`` naming the part being read."""
    try:
        yield
    except CheckpointError:
        raise
    except _UNREADABLE as exc:
        text = " ".join(str(exc).split())
        raise CheckpointError(f"{path}: {type(exc).__name__}: {text[:400]}") from exc


def _check_optimizer_shapes(folder: Path, name: str, optimizer: torch.optim.Optimizer) -> None:
    # load_state_dict checks the number of parameters, not the shapes of their moments.
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise CheckpointError(f"{folder / TRAINER_STATE}: optimiser {name!r} state {key!r} has shape "
                                          f"{tuple(value.shape)}, its parameter {tuple(param.shape)}.")


def restore_latest(root: Path, spec: FamilySpec, model_config: Any, seed: int) -> Restored | None:
    """The newest checkpoint under ``root`` that loads completely; broken ones are skipped with a warning."""
    for folder in checkpoint_dirs(root):
        try:
            return restore_checkpoint(folder, spec, model_config, seed)
        except _UNREADABLE as exc:
            logger.warning("Checkpoint %s is unusable, falling back to an older one: %s", folder,
                           _describe(folder, exc))
    return None


# ------------------------------------------------------------------ the loop


# Set by `accelerate launch` from an Accelerate config that shards the model.
_SHARDING_VARIABLES = ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")


def _allow_precision(precision: str) -> None:
    """Let this process's next ``Accelerator`` use ``precision`` after one with another.

    Accelerate keeps one ``AcceleratorState`` per process and refuses an ``Accelerator`` whose
    mixed precision differs from the first one's; one ``kedro run`` trains several families,
    and a profile may set one to ``no`` and leave another on ``auto`` (bf16 on CUDA and on
    AMX CPUs). The state is dropped, never the process group (``PartialState``), when the
    precision changes; ``AcceleratorState._reset_state`` is what Accelerate's own tests use.
    """
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state(reset_partial_state=False)


def resolved_precision(config: TrainingConfig) -> str:
    """What ``mixed_precision`` becomes on this machine: the setting itself, or for ``auto`` bf16
    on CUDA and on CPUs with AMX-BF16 and ``no`` (fp32) elsewhere. The model card records it: the
    same data and settings train other weights in bf16 than in fp32."""
    if config.mixed_precision != "auto":
        return config.mixed_precision
    return "bf16" if auto_bf16(_device_type(config)) else "no"


def _device_type(config: TrainingConfig) -> str:
    """cuda, mps or cpu: where ``config.device`` puts training on this machine."""
    if torch.cuda.is_available() and config.device in ("auto", "cuda"):
        return "cuda"
    return "mps" if torch.backends.mps.is_available() and config.device in ("auto", "mps") else "cpu"


def _accelerator(config: TrainingConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    device_type = _device_type(config)
    cuda, mps = device_type == "cuda", device_type == "mps"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available.")
    sharded = [name for name in _SHARDING_VARIABLES if os.environ.get(name, "").lower() == "true"]
    if sharded:
        # Checkpoints, EMA and the saved generator read each module's full state dict from
        # one process; sharded modules would save a shard. Every model here fits one GPU.
        raise ValueError(f"{', '.join(sharded)} is set (an `accelerate config` with FSDP or DeepSpeed): synthmed's "
                         "trainer runs data-parallel (DDP) only. Choose 'No distributed training' or multi-GPU "
                         "in `accelerate config`, or use `synthmed train --processes N` (torchrun).")
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)  # set by torchrun
    if cuda and local_processes > torch.cuda.device_count():  # Accelerate gives process k the GPU k
        raise ValueError(f"{local_processes} processes on this machine (LOCAL_WORLD_SIZE) but "
                         f"{torch.cuda.device_count()} CUDA device(s): one process per GPU. Run "
                         f"`synthmed train --processes {torch.cuda.device_count()}` (or fewer).")
    precision = resolved_precision(config)
    if config.mixed_precision == "auto" and not (cuda or mps) and precision == "bf16":
        logger.info("training.mixed_precision auto: bf16 autocast on this CPU (AMX-BF16); 'no' for fp32")
    _allow_precision(precision)
    # GAN steps use a module in one loss and not in the other: let DDP allow unused parameters.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=not (cuda or mps), mixed_precision=precision, kwargs_handlers=[ddp])


def resolved_settings(accelerator: Any) -> dict[str, str]:
    """What ``mixed_precision: auto`` and ``device: auto`` became on this machine, for the run's
    record: the parameters say ``auto``, which reads the same for an fp32 and a bf16 run."""
    return {"mixed_precision": str(accelerator.mixed_precision), "device": accelerator.device.type,
            "processes": str(accelerator.num_processes)}


def _epoch_loader(dataset: Dataset, config: TrainingConfig, epoch: int) -> DataLoader:
    from torch.utils.data import DataLoader

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
        tracker: receives, once, what ``auto`` settings resolved to on this machine
            (``mixed_precision``: bf16 / fp16 / no, ``device``, ``processes``), then metrics
            every ``log_every`` steps and sample grids.
        on_step: called with the global step after each step (tests use it to interrupt).

    Returns:
        ``(models, history)``: the trained modules (unwrapped, on CPU, eval mode) and one
        record per logged step (``step``, the losses, ``lr``, ``images_per_s``; the last is a
        figure of the machine, see ``reproducible_history``).
    """
    accelerator = _accelerator(config)
    if tracker is not None and accelerator.is_main_process:
        tracker.log_params(resolved_settings(accelerator))
    if config.class_balance:
        if not hasattr(dataset, "class_balanced"):
            raise TypeError(f"training.class_balance needs a dataset that knows its labels (ArrayBatches), "
                            f"got {type(dataset).__name__}.")
        counts = dataset.class_counts()
        dataset = dataset.class_balanced()
        logger.info("%s: class-balanced epochs, examples per label %s, each label's rows repeated up to %d",
                    spec.name, counts, max(counts.values()))
    per_step = config.batch_size * accelerator.num_processes
    if len(dataset) < per_step:
        raise ValueError(f"The train split has {len(dataset)} examples, fewer than one step takes: batch_size="
                         f"{config.batch_size} per process x {accelerator.num_processes} process(es) = {per_step}. "
                         "Lower training.batch_size or the number of processes.")
    if accelerator.is_main_process:
        remove_stale_temporaries(checkpoint_root)
    generator = torch.Generator(device=accelerator.device).manual_seed(config.seed + accelerator.process_index)

    start = 0
    history: list[dict[str, float]] = []
    resume = restore_latest(checkpoint_root, spec, model_config, config.seed)
    if resume is None:
        models = spec.build(model_config, config.seed)
        optimizers = spec.make_optimizers(models, model_config)
    else:
        models, optimizers, history = resume.models, resume.optimizers, list(resume.history)
        states = resume.generator_states
        start = resume.step
        if accelerator.process_index < len(states):  # each process continues its own random stream
            generator.set_state(states[accelerator.process_index].to(torch.uint8))
        else:  # more processes than the checkpoint had: a new stream, not a copy of another process's
            generator.manual_seed(config.seed + accelerator.process_index + 1_000_003 * start)
        logger.info("Resuming %s training from %s (step %d of %d)%s", spec.name, resume.folder, start, config.steps,
                    "" if len(states) == accelerator.num_processes else
                    f" on {accelerator.num_processes} process(es); the checkpoint was written by {len(states)}")

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

    # An epoch is as many steps as the processes together fill: after a resume on another number
    # of processes, the same step falls elsewhere in the (seeded) epoch order (README, Generators).
    steps_per_epoch = len(dataset) // per_step
    progress = tqdm(total=config.steps, initial=start, desc=f"training {spec.name}", unit="step",
                    disable=not accelerator.is_main_process or None)
    step = start
    tic, images_seen = time.perf_counter(), 0
    timing = ProgressLog(logger, f"training {spec.name}", config.steps, "steps", start=start)
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
                    logger.info("%s step %d/%d %s; %s", spec.name, step, config.steps,
                                " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step"),
                                timing.timing(step))
                if tracker is not None and accelerator.is_main_process:
                    tracker.log_metrics({k: v for k, v in record.items() if k != "step"}, step)
                tic, images_seen = time.perf_counter(), 0
            progress.update(1)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                _checkpoint(accelerator, checkpoint_root, step, spec, model_config, models, optimizers, generator,
                            config.keep_checkpoints, history)
            if tracker is not None and config.sample_every and step % config.sample_every == 0 \
                    and accelerator.is_main_process:
                tracker.log_samples(_unwrapped(accelerator, models), step)
            if on_step is not None:
                on_step(step)
            if step >= config.steps:
                break
    progress.close()
    if step > start or resume is None:  # a rerun of a finished run has nothing new to save
        _checkpoint(accelerator, checkpoint_root, step, spec, model_config, models, optimizers, generator,
                    config.keep_checkpoints, history)
    final = _unwrapped(accelerator, models, keep_autocast=False).to("cpu").eval()
    _end(accelerator)
    return final, history


# Figures of the machine and its load, not of the model: logged and sent to MLflow while training
# runs, and kept out of what DVC versions (the history CSV, the model card), so a rerun with the same
# data, settings and precision writes the same bytes.
WALL_CLOCK_KEYS = ("images_per_s",)


def reproducible_history(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """``history`` without the wall-clock figures (``WALL_CLOCK_KEYS``)."""
    return [{k: v for k, v in record.items() if k not in WALL_CLOCK_KEYS} for record in history]


def _end(accelerator: Any) -> None:
    """End one ``train`` call without ending the process group.

    ``Accelerator.end_training`` destroys the process group, and Accelerate's state (one per
    process) does not set it up again for the next ``Accelerator``: a multi-process
    ``kedro run --pipelines training`` trains several families in one process, and the second
    one would fail ("Default process group has not been initialized"). The group is destroyed
    when the process exits instead.
    """
    accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        _destroy_process_group_at_exit()


@functools.cache
def _destroy_process_group_at_exit() -> None:
    def destroy() -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    atexit.register(destroy)


def _unwrapped(accelerator: Any, models: nn.ModuleDict, keep_autocast: bool = True) -> nn.ModuleDict:
    """The modules without their DDP wrappers. ``keep_autocast=False`` (the trained models handed
    back): also without the autocast Accelerate wraps around ``forward`` under mixed precision, so
    the caller's forward passes run in the precision it chooses, as a loaded copy's do."""
    return nn.ModuleDict({name: accelerator.unwrap_model(module, keep_fp32_wrapper=keep_autocast)
                          for name, module in models.items()})


def _checkpoint(accelerator: Any, root: Path, step: int, spec: FamilySpec, model_config: Any,
                models: nn.ModuleDict, optimizers: dict[str, Any], generator: torch.Generator, keep: int,
                history: list[dict[str, float]]) -> None:
    """Save a checkpoint from the main process; a failed write is logged, never raised.

    Why not raise: the models are in memory and training can go on (the next checkpoint
    retries); after the last step, ``train`` still returns them, so the pipeline's
    GeneratorDataset can save the finished model (to another disk if need be) instead of
    losing hours of training to a full checkpoint disk. The previous checkpoint stays
    intact, so a rerun after freeing space resumes from it.
    """
    states = accelerator.gather(generator.get_state().to(torch.int64).to(accelerator.device)[None]).cpu()
    if accelerator.is_main_process:
        trainer_state = {
            "step": step,
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "generator": [s.to(torch.uint8) for s in states.reshape(accelerator.num_processes, -1)],
        }
        try:
            save_checkpoint(root, step, spec, model_config, _unwrapped(accelerator, models), trainer_state, keep,
                            history)
        except CheckpointWriteError as exc:
            logger.warning("Checkpoint at step %d NOT saved in %s; training goes on with the models in memory "
                           "(the newest saved checkpoint is unchanged). %s", step, root, exc)
    accelerator.wait_for_everyone()
