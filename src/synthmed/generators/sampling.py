"""Generation driven by a sampling plan table, with a provenance row per image.

A plan row asks for ``count`` images of one kind:

- ``condition: class``, ``label``: class-conditional images of that class;
- ``condition: mask``: images for real structure masks (taken in order from ``real``; a
  volume family takes the real label map with the mask, ``real["label_maps"]``); with a
  ``label``, only the masks of that class's rows (``real["labels"]``), each class's rows in
  turn, so a plan can ask for 32 lesion and 32 normal label maps of a split where lesions
  are rare; without one, every row's, each image taking its source's class;
- ``condition: inpaint`` with ``case``: ``inside_mask`` (regenerate the masked structure of
  a real image, keep the rest), ``outside_box`` (keep a central box, regenerate around it),
  ``new_lesion`` (place the mask of one real image into another real image, regenerate it);
  a ``label`` chooses the rows as for masks;
- ``condition: unconditional``.

The plan is expanded in row order and generated in batches of ``batch_size``; batch ``b``
draws from ``torch.Generator().manual_seed(seed + b)``. The same plan, seed and batch size
therefore give the same images bit for bit on CPU; each provenance row records the batch
seed and the image's position in its batch.

Several processes (``synthmed launch --processes N --pipelines sampling``, torchrun): each
process draws a contiguous block of the batches (``synthmed.core.collectives.block``), still
batch ``b`` from ``seed + b``, and the images are gathered on every process in batch order
(``all_gather`` of padded tensors); the provenance, labels and masks follow from the plan on
every process. The result is the one-process result bit for bit. ``batch_size: auto`` takes
the smallest batch size the processes chose, and an out-of-memory batch on any process makes
all of them sample the plan again at half the size.

Throughput (``ThroughputConfig``, ``params:<family>.sampling.throughput``): the device, the
autocast precision (``auto``: bf16 on CUDA and on CPUs with AMX-BF16, fp32 on other CPUs),
channels-last weights (``auto``: on CUDA), ``torch.compile`` (off by default) and ``batch_size:
auto`` (CPU: ``cpu_batch_size``; CUDA: the largest batch that fits ``memory_fraction`` of the
free memory, measured by a one-step probe and halved on out-of-memory). A CPU run's images
depend on the batch size and the precision, not on how many processes share the work. Each
provenance row records what was used (``THROUGHPUT_COLUMNS``).
The noise is drawn on the CPU generator and moved to the device, so a batch's seed means the
same starting noise on every device.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from synthmed.core import collectives, distributed
from synthmed.core.lazy import lazy_import
from synthmed.core.progress import ProgressLog
from synthmed.generators.base import Conditions, FamilySpec, SamplerSpec, TrainedGenerator, label_map_array
from synthmed.generators.common import CheckpointError, weights_digest
from synthmed.generators.precision import auto_bf16

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
torch = lazy_import("torch")
nn = lazy_import("torch.nn")

logger = logging.getLogger(__name__)

PLAN_COLUMNS = ["condition", "label", "count", "case"]
CONDITIONS = ("class", "mask", "inpaint", "unconditional")
INPAINT_CASES = ("inside_mask", "outside_box", "new_lesion")
# What ran where: the throughput choice of the run (``Throughput.columns``), on every row.
THROUGHPUT_COLUMNS = ["batch_size", "device", "precision", "channels_last", "compiled"]
PROVENANCE_COLUMNS = ["index", "family", "checkpoint", "sampler", "steps", "guidance", "seed", "batch_position",
                      "condition", "label", "case", "source_index", *THROUGHPUT_COLUMNS]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # torch dtype names (torch loads on first use)
# batch_size: auto on CUDA: the probe batch whose peak memory, per image, sizes the real one.
PROBE_BATCH = 8


@dataclass(frozen=True)
class ThroughputConfig:
    """``params:<family>.sampling.throughput``: where and how fast the plan is sampled.

    Args:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:<n>``.
        precision: autocast dtype of the networks: ``auto`` (bf16 on CUDA and on CPUs with AMX-BF16,
            fp32 on other CPUs: ``synthmed.generators.precision``), ``fp32``
            (no autocast), ``bf16`` or ``fp16``. The samplers' updates stay in fp32.
        channels_last: 4D weights in channels-last memory format (faster convolutions on
            tensor cores); ``auto``: on CUDA only. Image families only (volumes keep theirs).
        compile: wrap each network in ``torch.compile`` (first batch pays the compilation).
        cpu_batch_size: ``batch_size: auto`` on the CPU (32 = the batch of the CPU profile).
        max_batch_size: ``batch_size: auto`` on CUDA: never more than this.
        memory_fraction: ``batch_size: auto`` on CUDA: the share of the free device memory to fill.
    """

    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False
    cpu_batch_size: int = 32
    max_batch_size: int = 1024
    memory_fraction: float = 0.8

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"sampling.throughput.precision must be one of {list(PRECISIONS)}, "
                             f"got {self.precision!r}.")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"sampling.throughput.device must be auto, cpu, cuda or cuda:<n>, got {self.device!r}.")
        for name in ("cpu_batch_size", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"sampling.throughput.{name} must be >= 1, got {getattr(self, name)}.")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ValueError(f"sampling.throughput.memory_fraction must be in (0, 1], got {self.memory_fraction}.")


@dataclass(frozen=True)
class Throughput:
    """The resolved choice: what ``ThroughputConfig`` means on this machine for this run."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    compiled: bool
    batch_size: int

    def columns(self) -> dict[str, Any]:
        """The provenance columns (``THROUGHPUT_COLUMNS``)."""
        return {"batch_size": self.batch_size, "device": str(self.device), "precision": self.precision,
                "channels_last": self.channels_last, "compiled": self.compiled}

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the networks' forward passes (nothing for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, AUTOCAST_DTYPES[self.precision]))


def sampling_device(name: str) -> torch.device:
    """``ThroughputConfig.device`` as a device (``auto``: CUDA when available; ``cuda`` under a launcher:
    this process's GPU, ``collectives.local_device``)."""
    if name == "auto":
        return collectives.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"sampling.throughput.device is {name!r} but torch sees no CUDA device; "
                         "use auto or cpu.")
    return collectives.local_device(device)


def resolve_throughput(options: ThroughputConfig, batch_size: int | str, spatial_dims: int = 2,
                       probe: Callable[[int], None] | None = None) -> Throughput:
    """The device, precision, memory format, compilation and batch size ``options`` ask for here.

    ``batch_size``: a number, or ``auto``: ``cpu_batch_size`` on the CPU; on CUDA
    ``auto_batch_size`` with ``probe(b)`` (one sampling step at batch ``b``).
    """
    device = sampling_device(options.device)
    cuda = device.type == "cuda"
    precision = ("bf16" if auto_bf16(device.type) else "fp32") if options.precision == "auto" else options.precision
    channels_last = (cuda if options.channels_last == "auto" else bool(options.channels_last)) and spatial_dims == 2
    if batch_size == "auto":
        if cuda and probe is not None:
            batch_size = auto_batch_size(probe, device=device, fraction=options.memory_fraction,
                                         largest=options.max_batch_size)
        else:
            batch_size = options.cpu_batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"sampling batch_size must be a positive integer or 'auto', got {batch_size!r}.")
    return Throughput(device, precision, channels_last, bool(options.compile), batch_size)


def is_out_of_memory(error: BaseException) -> bool:
    """A device allocation failure (CUDA's own error, or a RuntimeError saying so)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def largest_batch_that_runs(probe: Callable[[int], None], start: int, *,
                            on_failure: Callable[[], None] = lambda: None) -> int:
    """``start``, halved after each out-of-memory failure of ``probe(batch)`` until one runs.

    Raises the last out-of-memory error if even a batch of 1 fails; other errors pass through.
    """
    batch = max(int(start), 1)
    while True:
        try:
            probe(batch)
            return batch
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            if not is_out_of_memory(error) or batch == 1:
                raise
            logger.info("sampling batch %d ran out of device memory; trying %d", batch, batch // 2)
            on_failure()
            batch //= 2


def auto_batch_size(probe: Callable[[int], None], *, device: torch.device, fraction: float, largest: int) -> int:
    """The CUDA batch size: free memory x ``fraction`` over the peak memory per image of a probe batch.

    The estimate is rounded down to a power of two, capped at ``largest``, then checked with one
    probe at that size and halved on out-of-memory (``largest_batch_that_runs``).
    """
    def release() -> None:
        torch.cuda.empty_cache()

    torch.cuda.synchronize(device)
    release()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    small = largest_batch_that_runs(probe, min(PROBE_BATCH, largest), on_failure=release)
    per_image = max((torch.cuda.max_memory_allocated(device) - base) / small, 1.0)
    free, _ = torch.cuda.mem_get_info(device)
    estimate = int(free * fraction / per_image)
    start = min(largest, 2 ** max(int(np.log2(max(estimate, 1))), 0))
    batch = largest_batch_that_runs(probe, max(start, small), on_failure=release)
    logger.info("sampling batch_size auto on %s: %d (%.1f MiB per image, %.0f MiB free)", device, batch,
                per_image / 2**20, free / 2**20)
    return batch


def prepare_models(models: nn.ModuleDict, throughput: Throughput) -> nn.ModuleDict:
    """``models`` on the device, in the memory format and compiled as ``throughput`` says.

    A copy when anything changes (the caller's modules stay as they were); the same object otherwise.
    """
    current = next((p.device for p in models.parameters()), torch.device("cpu"))
    if current == throughput.device and not throughput.channels_last and not throughput.compiled:
        return models
    prepared = copy.deepcopy(models).to(throughput.device)
    if throughput.channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    if throughput.compiled:
        prepared = nn.ModuleDict({name: torch.compile(module) for name, module in prepared.items()})
    return prepared



@dataclass(frozen=True)
class SamplingConfig:
    """``params:<family>.sampling``.

    Args:
        plan: rows of ``condition``, ``label``, ``count``, ``case`` (see the module docstring).
        sampler: the ``SamplerSpec`` keys.
        seed: batch ``b`` draws from ``seed + b``.
        batch_size: images per batch, or ``auto`` (chosen for the device, see ``throughput``).
        real_split: the split whose masks and images condition mask and inpainting rows.
        retained_checkpoints: also sample the plan (same seed) from every training checkpoint
            still kept under ``run.checkpoint_root`` (``training.keep_checkpoints``) other than
            the final one, for the memorisation gate's fraction flagged per checkpoint; these
            samples are kept apart from the family's samples (fidelity and utility use the
            final generator only).
        throughput: the ``ThroughputConfig`` keys (device, precision, channels-last, compile,
            how ``batch_size: auto`` chooses).
    """

    plan: tuple[Mapping[str, Any], ...]
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "ddim", "steps": 50})
    seed: int = 0
    batch_size: int | Literal["auto"] = 32
    real_split: str = "validation"
    retained_checkpoints: bool = False
    throughput: Mapping[str, Any] = field(default_factory=dict)


def plan_table(config: SamplingConfig) -> pd.DataFrame:
    """The plan rows of ``config`` as a table (``condition, label, count, case``)."""
    rows = [{"condition": r.get("condition", "class"), "label": r.get("label", ""), "count": r.get("count"),
             "case": r.get("case", "")} for r in config.plan]
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


def checkpoint_id(generator: TrainedGenerator) -> str:
    """The short hash that identifies a trained generator in provenance tables."""
    return weights_digest(generator.models)


def validate_plan(plan: pd.DataFrame, class_names: Sequence[str], config) -> pd.DataFrame:
    """Check a plan against the model; errors name the row, the value and what was expected."""
    missing = set(PLAN_COLUMNS) - set(plan.columns)
    if missing:
        raise ValueError(f"Sampling plan lacks column(s) {sorted(missing)}; expected {PLAN_COLUMNS}.")
    needed = config.needed_conditions()
    for i, row in enumerate(plan.to_dict("records")):
        where = f"sampling plan row {i}"
        if row["condition"] not in CONDITIONS:
            raise ValueError(f"{where}: condition {row['condition']!r} is not one of {list(CONDITIONS)}.")
        count = row["count"]
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"{where}: count must be a positive integer, got {count!r}.")
        if "labels" in needed and row["label"] not in class_names:
            raise ValueError(f"{where}: class {row['label']!r} is unknown; expected one of {list(class_names)}.")
        if row["condition"] == "inpaint" and row["case"] not in INPAINT_CASES:
            raise ValueError(f"{where}: inpainting case {row['case']!r} is not one of {list(INPAINT_CASES)}.")
        if row["condition"] == "inpaint" and "inpaint" not in needed:
            raise ValueError(f"{where}: this model was not trained for inpainting (conditioning {sorted(needed)}).")
        if row["condition"] == "mask" and "masks" not in needed:
            raise ValueError(f"{where}: this model does not take masks (conditioning {sorted(needed)}).")
    return plan[PLAN_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class Sampled:
    """Generated images ``(N, C, *S)`` float32 in [-1, 1], labels ``(N,)``, masks ``(N, 1, *S)``, provenance.

    ``*S``: ``(H, W)`` for image families, ``(D, H, W)`` for volume families.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    provenance: pd.DataFrame


def _box_keep(size: int, dims: int = 2) -> torch.Tensor:
    keep = torch.zeros((1,) + (size,) * dims)
    a, b = size // 4, size - size // 4
    keep[(slice(None),) + (slice(a, b),) * dims] = 1.0
    return keep


def _resized(array: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """``(C, *S)`` as float32, resized to ``size`` on every side (``interpolate``: 2D or 3D alike)."""
    tensor = torch.from_numpy(np.array(array, dtype=np.float32))
    if tensor.shape[-1] == size:
        return tensor
    return torch.nn.functional.interpolate(tensor[None], size=size, mode=mode)[0]


def _class_rows(real: Mapping[str, np.ndarray], real_indices: np.ndarray, row: Mapping, number: int,
                class_names: Sequence[str]) -> np.ndarray:
    """The rows of ``real_indices`` a mask or inpainting plan row draws from: all of them without a
    ``label``, else those of that class (in the same order), so ``{condition: mask, label: lesion}``
    conditions on the lesion slices' masks."""
    if not row["label"] or "labels" not in real:
        return real_indices
    if row["label"] not in class_names:
        raise ValueError(f"sampling plan row {number}: class {row['label']!r} is unknown; expected one of "
                         f"{list(class_names)} (or no label: masks of every class).")
    labels = np.asarray(real["labels"])[real_indices]
    rows = real_indices[labels == class_names.index(row["label"])]
    if not len(rows):
        counts = {name: int((labels == k).sum()) for k, name in enumerate(class_names)}
        raise ValueError(f"sampling plan row {number}: no {row['label']!r} rows among the {len(real_indices)} "
                         f"real rows it conditions on (per class: {counts}); give the row no label or choose "
                         f"another sampling.real_split.")
    return rows


def _expand(plan: pd.DataFrame, class_names: Sequence[str], real: Mapping[str, np.ndarray] | None,
            real_indices: np.ndarray, size: int, dims: int = 2) -> list[dict]:
    """One request per image, in plan order, with its conditioning tensors (``dims`` spatial sides)."""
    requests, cursors = [], {}
    for number, row in enumerate(plan.to_dict("records")):
        pool = real_indices
        if row["condition"] in ("mask", "inpaint"):
            if real is None or len(real_indices) == 0:
                raise ValueError(f"{row['condition']} rows need real masks/images, but none were given.")
            pool = _class_rows(real, real_indices, row, number, class_names)
        for _ in range(int(row["count"])):
            request = {"condition": row["condition"], "label": row["label"], "case": row["case"] or "",
                       "class_id": class_names.index(row["label"]) if row["label"] in class_names else 0,
                       "source_index": -1}
            if row["condition"] in ("mask", "inpaint"):
                cursor = cursors.get(row["label"], 0)
                j, other = int(pool[cursor % len(pool)]), int(pool[(cursor + 1) % len(pool)])
                cursors[row["label"]] = cursor + 1
                mask = _resized(np.asarray(real["masks"][j]) > 0, size, "nearest")
                image = _resized(real["images"][j], size, "area")
                request.update(mask=mask, source_index=j)
                request["label_map"] = _resized(label_map_array(real)[j], size, "nearest").round().to(torch.int64)
                if not row["label"] and "labels" in real:  # a mask row takes its source's class
                    request["class_id"] = int(real["labels"][j])
                    request["label"] = class_names[request["class_id"]] if class_names else ""
                if row["condition"] == "inpaint":
                    if row["case"] == "inside_mask":
                        request.update(image=image, keep=1.0 - mask)
                    elif row["case"] == "outside_box":
                        request.update(image=image, keep=_box_keep(size, dims))
                    else:  # new_lesion: the mask of image j placed into image `other`
                        host = _resized(real["images"][other], size, "area")
                        request.update(image=host, keep=1.0 - mask, source_index=other)
            requests.append(request)
    return requests


def generate_from_plan(
    spec: FamilySpec,
    config,
    models: nn.ModuleDict,
    plan: pd.DataFrame,
    class_names: Sequence[str],
    sampler: SamplerSpec,
    *,
    seed: int,
    batch_size: int | str,
    checkpoint: str,
    real: Mapping[str, np.ndarray] | None = None,
    real_indices: np.ndarray | None = None,
    throughput: ThroughputConfig | None = None,
) -> Sampled:
    """Generate every image the plan asks for (see the module docstring for the seeding).

    ``batch_size``: a number or ``auto``; ``throughput``: device, precision, memory format and
    compilation (default ``ThroughputConfig()``: the ``auto`` choices, i.e. on a CPU machine
    fp32 on the CPU as before). On CUDA with ``batch_size: auto``, a batch that runs out of
    memory halves the batch size and starts the plan again (so every image's seed follows
    the batch size its provenance row records). Under a launcher with several processes the
    batches are split over them and gathered (module docstring): every process returns the
    whole plan's ``Sampled``.
    """
    plan = validate_plan(plan, class_names, config)
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                 or batch_size < 1):
        raise ValueError(f"sampling batch_size must be >= 1 or 'auto', got {batch_size!r}.")
    options = throughput if throughput is not None else ThroughputConfig()
    needed = config.needed_conditions()
    shape = spec.sample_shape(config)  # (C, *S)
    requests = _expand(plan, class_names, real, np.asarray(real_indices if real_indices is not None else []),
                       config.image_size, spec.spatial_dims)
    # Everything but the batch size first: the probe runs the prepared networks as the run will.
    chosen = resolve_throughput(options, 1, spec.spatial_dims)
    collectives.process_group(cpu=chosen.device.type != "cuda")  # several processes: before any probe
    prepared = prepare_models(models, chosen)

    def probe(b: int) -> None:  # one sampling step at batch b (every step of a sampler costs about the same)
        chunk = [dict(requests[i % len(requests)]) for i in range(b)]
        with chosen.autocast():
            spec.sample(prepared, config, _conditions(chunk, needed, shape), replace(sampler, steps=1),
                        torch.Generator().manual_seed(seed))

    if batch_size == "auto":
        chosen = resolve_throughput(options, "auto", spec.spatial_dims, probe if requests else None)
        # Several processes: one batch size for all (each probed its own device), so the batches,
        # and the seeds, are those of one process.
        chosen = replace(chosen, batch_size=collectives.all_min(chosen.batch_size))
    else:
        chosen = replace(chosen, batch_size=int(batch_size))
    while True:
        failed: BaseException | None = None
        try:
            local = _draw(spec, config, prepared, requests, sampler, chosen, seed=seed)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            if not (is_out_of_memory(error) and batch_size == "auto" and chosen.batch_size > 1):
                raise
            failed = error
        # Every process learns whether one ran out of memory: they start again together.
        if collectives.all_max(failed is not None):
            logger.warning("sampling batch %d ran out of device memory%s; sampling the plan again at %d",
                           chosen.batch_size, "" if failed else " on another process", chosen.batch_size // 2)
            if chosen.device.type == "cuda":
                torch.cuda.empty_cache()
            chosen = replace(chosen, batch_size=chosen.batch_size // 2)
            continue
        return _assemble(spec, config, requests, sampler, chosen, local, seed=seed, checkpoint=checkpoint)


def _conditions(chunk: Sequence[dict], needed: frozenset[str], shape: tuple[int, ...]) -> Conditions:
    """The ``Conditions`` of one batch of requests (``_expand``)."""
    sides = shape[1:]
    if "inpaint" in needed:  # an inpainting model always takes context: none known = keep 0
        blank = torch.zeros(shape)
        for r in chunk:
            r.setdefault("image", blank)
            r.setdefault("keep", torch.zeros((1, *sides)))
    has = {k: all(k in r for r in chunk) for k in ("mask", "image", "label_map")}
    return Conditions(
        n=len(chunk),
        labels=torch.tensor([r["class_id"] for r in chunk]) if "labels" in needed else None,
        masks=torch.stack([r["mask"] for r in chunk]) if "masks" in needed and has["mask"] else None,
        images=torch.stack([r["image"] for r in chunk]) if has["image"] else None,
        keep=torch.stack([r["keep"] for r in chunk]) if has["image"] else None,
        label_maps=torch.stack([r["label_map"] for r in chunk]) if "label_maps" in needed and has["label_map"]
        else None,
    )


def _batches(count: int, batch_size: int) -> list[range]:
    """The request positions of each batch: batch ``b`` is ``[b * batch_size, (b + 1) * batch_size)``."""
    return [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def _draw(spec: FamilySpec, config, models: nn.ModuleDict, requests: list[dict], sampler: SamplerSpec,
          throughput: Throughput, *, seed: int) -> torch.Tensor:
    """This process's images: every batch on one process; on several, its contiguous block of the
    batches (``collectives.block``). Batch ``b`` draws from ``seed + b`` wherever it runs."""
    needed = config.needed_conditions()
    shape = spec.sample_shape(config)
    batches = _batches(len(requests), throughput.batch_size)
    first, stop = collectives.block(len(batches))
    mine = batches[first:stop]
    images = []
    progress = ProgressLog(logger, f"sampling {spec.name} ({spec.describe_sampler(sampler)})"
                           + (f" on {distributed.describe()}" if collectives.active() else ""),
                           sum(len(b) for b in mine), "images")
    done = 0
    for b, positions in enumerate(mine, start=first):
        conditions = _conditions(requests[positions.start : positions.stop], needed, shape)
        with throughput.autocast():
            drawn = spec.sample(models, config, conditions, sampler, torch.Generator().manual_seed(seed + b))
        images.append(drawn.float().cpu())
        done += len(positions)
        progress.update(done)
    return torch.cat(images) if images else torch.zeros((0, *shape), dtype=torch.float32)


def _assemble(spec: FamilySpec, config, requests: list[dict], sampler: SamplerSpec, throughput: Throughput,
              local: torch.Tensor, *, seed: int, checkpoint: str) -> Sampled:
    """The ``Sampled`` of the whole plan from this process's images ``local`` (`_draw`).

    On several processes the blocks are gathered on every process in rank order, which is
    batch order; the provenance rows, labels and masks follow from the requests alone, so every
    process writes them itself.
    """
    shape = spec.sample_shape(config)
    sides = shape[1:]
    batches = _batches(len(requests), throughput.batch_size)
    counts = [stop - start for start, stop in collectives.chunk_blocks(len(requests), throughput.batch_size)]
    stacked = collectives.gather_rows(local, counts).numpy() if requests else np.zeros((0, *shape), np.float32)
    extra = throughput.columns()
    drawn = spec.drawn_with(sampler)  # a GAN's rows say "forward", not the sampler settings it never ran
    rows = [(i, spec.name, checkpoint, *drawn, seed + b,
             i - positions.start, r["condition"], r["label"], r["case"], r["source_index"],
             *(extra[c] for c in THROUGHPUT_COLUMNS))
            for b, positions in enumerate(batches) for i in positions for r in (requests[i],)]
    masks = np.stack([(r["mask"].numpy() > 0).astype(np.uint8) if "mask" in r else
                      np.zeros((1, *sides), np.uint8) for r in requests]) \
        if requests else np.zeros((0, 1, *sides), np.uint8)
    labels = np.asarray([r["class_id"] for r in requests], dtype=np.int64)
    return Sampled(stacked.astype(np.float32), labels, masks, pd.DataFrame(rows, columns=PROVENANCE_COLUMNS))


def checkpoint_step(folder: Path) -> int:
    """The training step of a checkpoint folder ``step-<n>`` (``synthmed.generators.training``)."""
    return int(Path(folder).name.rpartition("-")[2])


def sample_checkpoints(folders: Sequence[Path], final: str, plan: pd.DataFrame, class_names: Sequence[str],
                       sampler: SamplerSpec, *, seed: int, batch_size: int | str, empty: Sampled,
                       real: Mapping[str, np.ndarray] | None = None,
                       real_indices: np.ndarray | None = None,
                       throughput: ThroughputConfig | None = None) -> Sampled:
    """The plan sampled from every checkpoint folder but the final generator (``final``: its ``checkpoint_id``).

    Each checkpoint draws the same plan with the same seed, so the checkpoints differ only by
    their weights. Provenance gets ``checkpoint_step``; indices run over all checkpoints.
    A checkpoint that does not load (broken, partly written) is skipped with a warning.
    ``empty``: what to return when no checkpoint is sampled (the shapes of the family's samples).
    """
    from synthmed.generators.registry import load_generator  # here: it imports every family (torch)

    parts = []
    for folder in folders:
        try:
            spec, config, models = load_generator(folder)
        except CheckpointError as exc:
            logger.warning("Not sampling checkpoint %s: %s", folder, exc)
            continue
        digest = weights_digest(models)
        if digest == final:  # the final generator's weights: its samples are the family's own
            continue
        result = generate_from_plan(spec, config, models, plan, class_names, sampler, seed=seed,
                                    batch_size=batch_size, checkpoint=digest, real=real, real_indices=real_indices,
                                    throughput=throughput)
        parts.append(replace(result, provenance=result.provenance.assign(checkpoint_step=checkpoint_step(folder))))
        logger.info("Sampled %d images from checkpoint %s (step %d)", len(result.images), folder,
                    checkpoint_step(folder))
    if not parts:
        return Sampled(empty.images[:0], empty.labels[:0], empty.masks[:0],
                       pd.DataFrame(columns=[*PROVENANCE_COLUMNS, "checkpoint_step"]))
    provenance = pd.concat([part.provenance for part in parts], ignore_index=True)
    provenance["index"] = np.arange(len(provenance))
    return Sampled(*(np.concatenate([getattr(part, name) for part in parts]) for name in ("images", "labels", "masks")),
                   provenance)
