"""Generation driven by a sampling plan table, with a provenance row per image.

A plan row asks for ``count`` images of one kind:

- ``condition: class``, ``label``: class-conditional images of that class;
- ``condition: mask``: images for real structure masks (taken in order from ``real``; a
  volume family takes the real label map with the mask, ``real["label_maps"]``);
- ``condition: inpaint`` with ``case``: ``inside_mask`` (regenerate the masked structure of
  a real image, keep the rest), ``outside_box`` (keep a central box, regenerate around it),
  ``new_lesion`` (place the mask of one real image into another real image, regenerate it);
- ``condition: unconditional``.

The plan is expanded in row order and generated in batches of ``batch_size``; batch ``b``
draws from ``torch.Generator().manual_seed(seed + b)``. The same plan, seed and batch size
therefore give the same images bit for bit on CPU; each provenance row records the batch
seed and the image's position in its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.core.progress import ProgressLog
from synthmed.generators.base import Conditions, FamilySpec, SamplerSpec, TrainedGenerator
from synthmed.generators.common import CheckpointError, weights_digest

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
torch = lazy_import("torch")
nn = lazy_import("torch.nn")

logger = logging.getLogger(__name__)

PLAN_COLUMNS = ["condition", "label", "count", "case"]
CONDITIONS = ("class", "mask", "inpaint", "unconditional")
INPAINT_CASES = ("inside_mask", "outside_box", "new_lesion")
PROVENANCE_COLUMNS = ["index", "family", "checkpoint", "sampler", "steps", "guidance", "seed", "batch_position",
                      "condition", "label", "case", "source_index"]



@dataclass(frozen=True)
class SamplingConfig:
    """``params:<family>.sampling``.

    Args:
        plan: rows of ``condition``, ``label``, ``count``, ``case`` (see the module docstring).
        sampler: the ``SamplerSpec`` keys.
        seed: batch ``b`` draws from ``seed + b``.
        batch_size: images per batch.
        real_split: the split whose masks and images condition mask and inpainting rows.
        retained_checkpoints: also sample the plan (same seed) from every training checkpoint
            still kept under ``run.checkpoint_root`` (``training.keep_checkpoints``) other than
            the final one, for the memorisation gate's fraction flagged per checkpoint; these
            samples are kept apart from the family's samples (fidelity and utility use the
            final generator only).
    """

    plan: tuple[Mapping[str, Any], ...]
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "ddim", "steps": 50})
    seed: int = 0
    batch_size: int = 32
    real_split: str = "validation"
    retained_checkpoints: bool = False


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


def _expand(plan: pd.DataFrame, class_names: Sequence[str], real: Mapping[str, np.ndarray] | None,
            real_indices: np.ndarray, size: int, dims: int = 2) -> list[dict]:
    """One request per image, in plan order, with its conditioning tensors (``dims`` spatial sides)."""
    requests, cursor = [], 0
    for row in plan.to_dict("records"):
        for _ in range(int(row["count"])):
            request = {"condition": row["condition"], "label": row["label"], "case": row["case"] or "",
                       "class_id": class_names.index(row["label"]) if row["label"] in class_names else 0,
                       "source_index": -1}
            if row["condition"] in ("mask", "inpaint"):
                if real is None or len(real_indices) == 0:
                    raise ValueError(f"{row['condition']} rows need real masks/images, but none were given.")
                j = int(real_indices[cursor % len(real_indices)])
                other = int(real_indices[(cursor + 1) % len(real_indices)])
                cursor += 1
                mask = _resized(np.asarray(real["masks"][j]) > 0, size, "nearest")
                image = _resized(real["images"][j], size, "area")
                request.update(mask=mask, source_index=j)
                if "label_maps" in real:
                    request["label_map"] = _resized(real["label_maps"][j], size, "nearest").round().to(torch.int64)
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
    batch_size: int,
    checkpoint: str,
    real: Mapping[str, np.ndarray] | None = None,
    real_indices: np.ndarray | None = None,
) -> Sampled:
    """Generate every image the plan asks for (see the module docstring for the seeding)."""
    plan = validate_plan(plan, class_names, config)
    if batch_size < 1:
        raise ValueError(f"sampling batch_size must be >= 1, got {batch_size}.")
    needed = config.needed_conditions()
    shape = spec.sample_shape(config)  # (C, *S)
    sides = shape[1:]
    requests = _expand(plan, class_names, real, np.asarray(real_indices if real_indices is not None else []),
                       config.image_size, spec.spatial_dims)
    images, rows = [], []
    progress = ProgressLog(logger, f"sampling {spec.name} ({sampler.name}, {sampler.steps} steps)", len(requests),
                           "images")
    for b, start in enumerate(range(0, len(requests), batch_size)):
        chunk = requests[start : start + batch_size]
        if "inpaint" in needed:  # an inpainting model always takes context: none known = keep 0
            blank = torch.zeros(shape)
            for r in chunk:
                r.setdefault("image", blank)
                r.setdefault("keep", torch.zeros((1, *sides)))
        has = {k: all(k in r for r in chunk) for k in ("mask", "image", "label_map")}
        conditions = Conditions(
            n=len(chunk),
            labels=torch.tensor([r["class_id"] for r in chunk]) if "labels" in needed else None,
            masks=torch.stack([r["mask"] for r in chunk]) if "masks" in needed and has["mask"] else None,
            images=torch.stack([r["image"] for r in chunk]) if has["image"] else None,
            keep=torch.stack([r["keep"] for r in chunk]) if has["image"] else None,
            label_maps=torch.stack([r["label_map"] for r in chunk]) if "label_maps" in needed and has["label_map"]
            else None,
        )
        batch_seed = seed + b
        images.append(spec.sample(models, config, conditions, sampler, torch.Generator().manual_seed(batch_seed)))
        for position, r in enumerate(chunk):
            rows.append((start + position, spec.name, checkpoint, sampler.name, sampler.steps, sampler.guidance_scale,
                         batch_seed, position, r["condition"], r["label"], r["case"], r["source_index"]))
        progress.update(start + len(chunk))
    stacked = torch.cat(images).numpy() if images else np.zeros((0, *shape), np.float32)
    masks = np.stack([(r["mask"].numpy() > 0).astype(np.uint8) if "mask" in r else
                      np.zeros((1, *sides), np.uint8) for r in requests]) \
        if requests else np.zeros((0, 1, *sides), np.uint8)
    labels = np.asarray([r["class_id"] for r in requests], dtype=np.int64)
    return Sampled(stacked.astype(np.float32), labels, masks, pd.DataFrame(rows, columns=PROVENANCE_COLUMNS))


def checkpoint_step(folder: Path) -> int:
    """The training step of a checkpoint folder ``step-<n>`` (``synthmed.generators.training``)."""
    return int(Path(folder).name.rpartition("-")[2])


def sample_checkpoints(folders: Sequence[Path], final: str, plan: pd.DataFrame, class_names: Sequence[str],
                       sampler: SamplerSpec, *, seed: int, batch_size: int, empty: Sampled,
                       real: Mapping[str, np.ndarray] | None = None,
                       real_indices: np.ndarray | None = None) -> Sampled:
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
                                    batch_size=batch_size, checkpoint=digest, real=real, real_indices=real_indices)
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
