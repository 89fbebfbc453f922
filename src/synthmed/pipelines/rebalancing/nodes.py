"""Nodes of the ``rebalancing`` pipeline.

1. ``plan_rebalancing``: per class of the train split, how many synthetic images to add;
2. ``generate_rebalancing``: the deficits, from a class-conditional generator;
3. ``publish_rebalanced``: real + synthetic images in a folder that ``torchvision``'s
   ``ImageFolder`` and pandas read directly, with ``labels.csv`` (``is_synthetic`` and
   provenance) and a dataset card.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from synthmed.config import from_params
from synthmed.datasets.array_store import ArrayStore
from synthmed.datasets.generator import TrainedGenerator
from synthmed.generators.base import SamplerSpec
from synthmed.generators.export import to_png_pixels
from synthmed.generators.registry import get_family
from synthmed.generators.sampling import PLAN_COLUMNS, generate_from_plan
from synthmed.pipelines.sampling.nodes import checkpoint_id
from synthmed.pipelines.training.nodes import class_names_of

logger = logging.getLogger(__name__)

STRATEGIES = ("match_majority", "target_counts", "ratio")
CLASS_CONDITIONAL = ("ddpm", "dcgan")


@dataclass(frozen=True)
class RebalancingConfig:
    """``params:rebalancing``."""

    strategy: str = "match_majority"
    target_counts: Mapping[str, int] = field(default_factory=dict)
    ratio: float = 1.0
    split: str = "train"
    generator: str = "ddpm"
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "ddim", "steps": 50, "guidance_scale": 2.0})
    seed: int = 0
    batch_size: int = 32
    dataset_name: str = "synthmed-rebalanced"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"rebalancing.strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}.")
        if self.generator not in CLASS_CONDITIONAL:
            raise ValueError(
                f"rebalancing.generator must be a class-conditional family {list(CLASS_CONDITIONAL)}, "
                f"got {self.generator!r}."
            )
        if not 0.0 < float(self.ratio) <= 1.0:
            raise ValueError(f"rebalancing.ratio must be in (0, 1], got {self.ratio}.")
        for name, count in self.target_counts.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"rebalancing.target_counts.{name} must be a positive integer, got {count!r}.")


def _config(params: Mapping[str, Any]) -> RebalancingConfig:
    return from_params(RebalancingConfig, params, "rebalancing")


def plan_rebalancing(slice_manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Synthetic images to add per class, from the real counts of ``split``.

    - ``match_majority``: every class up to the largest class's count;
    - ``ratio``: every class up to ``ratio`` x the largest count;
    - ``target_counts``: each listed class up to its target (real + synthetic).

    Returns:
        A sampling plan (``condition, label, count, case``) plus ``real`` and ``target``
        columns; classes already at or above their target get no row.
    """
    config = _config(params)
    names = class_names_of(slice_manifest)
    real = slice_manifest[slice_manifest["split"] == config.split]["label"].value_counts().reindex(names, fill_value=0)
    if real.sum() == 0:
        raise ValueError(f"rebalancing: the {config.split!r} split has no images.")
    if config.strategy == "target_counts":
        unknown = sorted(set(config.target_counts) - set(names))
        if unknown or not config.target_counts:
            raise ValueError(
                f"rebalancing.target_counts names unknown class(es) {unknown}; expected some of {names}."
                if unknown else "rebalancing.strategy target_counts needs rebalancing.target_counts."
            )
        targets = {name: int(config.target_counts.get(name, real[name])) for name in names}
    else:
        factor = 1.0 if config.strategy == "match_majority" else float(config.ratio)
        top = int(real.max())
        targets = {name: max(int(real[name]), int(np.ceil(factor * top))) for name in names}
    rows = [{"condition": "class", "label": name, "count": targets[name] - int(real[name]), "case": "",
             "real": int(real[name]), "target": targets[name]} for name in names if targets[name] > real[name]]
    plan = pd.DataFrame(rows, columns=[*PLAN_COLUMNS, "real", "target"])
    logger.info("Rebalancing plan (%s): %s", config.strategy,
                {r["label"]: f"{r['real']} + {r['count']}" for r in rows} or "already balanced")
    return plan


def generate_rebalancing(
    ddpm_generator: TrainedGenerator,
    dcgan_generator: TrainedGenerator,
    rebalancing_plan: pd.DataFrame,
    slice_manifest: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The synthetic images of the plan, from the configured class-conditional generator."""
    config = _config(params)
    generator = {"ddpm": ddpm_generator, "dcgan": dcgan_generator}[config.generator]
    sampler = from_params(SamplerSpec, config.sampler, "rebalancing.sampler")
    names = class_names_of(slice_manifest)
    if generator.config.num_classes != len(names):
        raise ValueError(
            f"The {config.generator} generator has {generator.config.num_classes} classes, the slices have "
            f"{len(names)} {names}: retrain it (kedro run --pipelines training)."
        )
    result = generate_from_plan(get_family(generator.family), generator.config, generator.models,
                                rebalancing_plan[PLAN_COLUMNS], names, sampler, seed=config.seed,
                                batch_size=config.batch_size, checkpoint=checkpoint_id(generator))
    return {"images": result.images, "labels": result.labels}, result.provenance


def _card(config: RebalancingConfig, counts: pd.DataFrame, provenance: pd.DataFrame, size: int) -> str:
    table = "\n".join(f"| {r.label} | {r.real} | {r.synthetic} | {r.real + r.synthetic} |" for r in counts.itertuples())
    checkpoint = provenance["checkpoint"].iloc[0] if len(provenance) else "-"
    sampler = ", ".join(f"{k}={v}" for k, v in config.sampler.items())
    return f"""# {config.dataset_name}

The `{config.split}` split of the synthmed slices, rebalanced with synthetic images so that
the minority classes are filled (strategy `{config.strategy}`). Built by
`kedro run --pipelines rebalancing` (DVC stage `rebalancing`); get it with `dvc pull`.

| class | real | synthetic | total |
|---|---|---|---|
{table}

- **Layout:** `train/<class>/<file>.png` (16-bit grey PNG, {size}x{size} px; real slices are
  area-downsampled to the generator's size), readable by `torchvision.datasets.ImageFolder`;
  `labels.csv` lists every file with `label`, `class_id`, `is_synthetic` and, for synthetic
  images, its provenance (`family`, `checkpoint`, `sampler`, `steps`, `guidance`, `seed`,
  `batch_position`).
- **Generator:** `{config.generator}`, checkpoint `{checkpoint}` (hash of its weights).
- **Sampler:** {sampler}; seed {config.seed}, batch size {config.batch_size}.
- **Parameters:** `conf/base/parameters_rebalancing.yml` (and `parameters_training.yml` for
  the generator).
- **Evaluation:** fidelity, utility and the memorisation gate are not computed yet: **no
  memorisation gate has checked this dataset for copies of training images**. Until it has,
  share it only where the training images themselves may be shared (true for the public
  sample).
"""


def publish_rebalanced(
    slices: ArrayStore,
    slice_manifest: pd.DataFrame,
    synthetic: dict[str, np.ndarray],
    provenance: pd.DataFrame,
    rebalancing_plan: pd.DataFrame,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The published folder: ImageFolder layout, ``labels.csv``, ``provenance.csv``, ``README.md``."""
    config = _config(params)
    names = class_names_of(slice_manifest)
    images = np.asarray(synthetic["images"])
    size = images.shape[-1] if len(images) else int(slices["images"].shape[-1])
    files: dict[str, Any] = {}
    rows = []
    real_rows = slice_manifest[slice_manifest["split"] == config.split]
    for row in real_rows.itertuples():
        image = torch.from_numpy(np.array(slices["images"][row.index], dtype=np.float32))
        if image.shape[-1] != size:
            image = torch.nn.functional.interpolate(image[None], size=size, mode="area")[0]
        path = f"train/{row.label}/real_{row.index:06d}.png"
        files[path] = to_png_pixels(image.numpy())
        rows.append({"path": path, "label": row.label, "class_id": row.class_id, "is_synthetic": False})
    for row in provenance.itertuples():
        path = f"train/{row.label}/synthetic_{row.index:06d}.png"
        files[path] = to_png_pixels(images[row.index])
        rows.append({"path": path, "label": row.label, "class_id": names.index(row.label), "is_synthetic": True,
                     "family": row.family, "checkpoint": row.checkpoint, "sampler": row.sampler, "steps": row.steps,
                     "guidance": row.guidance, "seed": row.seed, "batch_position": row.batch_position})
    labels = pd.DataFrame(rows)
    counts = (labels.groupby(["label", "is_synthetic"]).size().unstack(fill_value=0)
              .reindex(index=names, columns=[False, True], fill_value=0)
              .rename(columns={False: "real", True: "synthetic"}).reset_index())
    files["labels.csv"] = labels
    files["provenance.csv"] = provenance
    files["README.md"] = _card(config, counts, provenance, size)
    logger.info("Published %d real + %d synthetic images", int(counts["real"].sum()), int(counts["synthetic"].sum()))
    return files
