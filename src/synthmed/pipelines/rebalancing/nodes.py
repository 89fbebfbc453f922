"""Nodes of the ``rebalancing`` pipeline.

1. ``plan_rebalancing``: per class of the train split, how many synthetic images to add;
2. ``generate_rebalancing``: the deficits, from a class-conditional generator;
3. ``gate_rebalancing``: the memorisation gate (PRIVACY.md section 3): every synthetic image
   against the training images, threshold calibrated on held-out images, self-test with
   planted copies; it fails the run or drops flagged images (``gate_action``);
4. ``publish_rebalanced``: real + the gate's kept synthetic images in a folder that
   ``torchvision``'s ``ImageFolder`` and pandas read directly, with ``labels.csv``
   (``is_synthetic`` and provenance with the gate's scores) and a dataset card.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from synthmed.core.config import from_params
from synthmed.datasets.array_store import ArrayStore
from synthmed.datasets.classifier import TrainedClassifier
from synthmed.datasets.generator import TrainedGenerator
from synthmed.generators.base import SamplerSpec
from synthmed.generators.export import to_png_pixels
from synthmed.generators.registry import get_family
from synthmed.generators.sampling import PLAN_COLUMNS, generate_from_plan
from synthmed.metrics.features import at_size
from synthmed.pipelines.evaluation.nodes import (
    evaluation_config,
    finite,
    gate_config,
    gate_embedding,
    scored_provenance,
    source_network,
)
from synthmed.pipelines.feature_encoders.nodes import source_config, split_images
from synthmed.pipelines.sampling.nodes import checkpoint_id
from synthmed.pipelines.training.nodes import class_names_of
from synthmed.privacy.memorisation import enforce, run_gate

logger = logging.getLogger(__name__)

STRATEGIES = ("match_majority", "target_counts", "ratio")
GATE_ACTIONS = ("fail", "drop")
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
    gate_action: str = "fail"

    def __post_init__(self) -> None:
        if self.gate_action not in GATE_ACTIONS:
            raise ValueError(f"rebalancing.gate_action must be one of {list(GATE_ACTIONS)}, got {self.gate_action!r}.")
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


@dataclass(frozen=True)
class GateDecision:
    """What ``publish_rebalanced`` needs from the gate: which samples to keep, their scores, the numbers."""

    keep: np.ndarray  # (N,) bool, one per synthetic image
    provenance: pd.DataFrame  # the sampling provenance plus the gate's columns
    numbers: dict[str, float]
    flag_on_features: bool = False


def gate_rebalancing(
    synthetic: dict[str, np.ndarray],
    provenance: pd.DataFrame,
    slices: ArrayStore,
    slice_manifest: pd.DataFrame,
    slice_encoder: TrainedClassifier,
    params: dict[str, Any],
    evaluation_params: dict[str, Any],
) -> tuple[GateDecision, dict[str, float], pd.DataFrame]:
    """Run the memorisation gate over the synthetic images before anything is published.

    Compared at ``evaluation.sources.slices.image_px`` with the reference (training) split;
    threshold from the held-out split; ``evaluation.memorisation`` holds the settings.

    Raises:
        MemorisationError: the self-test recall is below its minimum (always), or any image
            is flagged and ``gate_action`` is ``fail``. Nothing is published then.

    Returns:
        The decision, the gate's numbers (DVC metrics / MLflow) and the planted self-test
        table (which disguised training copies were caught).
    """
    config = _config(params)
    evaluation = evaluation_config(evaluation_params)
    gate = gate_config(evaluation.memorisation, action=config.gate_action)
    source = source_config(evaluation.sources["slices"], "evaluation.sources.slices")
    train, _, train_ids = split_images(slices, slice_manifest, source.reference_split, source.image_px)
    held_out, _, _ = split_images(slices, slice_manifest, source.held_out_split, source.image_px)
    network = source_network(evaluation, slice_encoder)
    candidates = at_size(np.asarray(synthetic["images"], dtype=np.float32), source.image_px)
    report = run_gate(candidates, train, held_out, config=gate, embed=gate_embedding(network, network(train)))
    keep = enforce(report, gate)  # raises for a failed self-test, or flagged images with action "fail"
    table = scored_provenance(provenance, report.candidates, train_ids)
    numbers = {f"gate.{k}": v for k, v in report.summary().items()}
    numbers["gate.dropped_count"] = float((~keep).sum())
    numbers["published_synthetic"] = float(keep.sum())
    numbers["gate.flagged_fraction"] = float(report.candidates["flagged"].mean()) if len(table) else 0.0
    for checkpoint, flagged in table.groupby("checkpoint")["memorisation_flagged"]:
        numbers[f"gate.flagged_fraction.checkpoint_{checkpoint}"] = float(flagged.mean())
    return GateDecision(keep, table, numbers, gate.flag_on_features), finite(numbers), report.planted


def _gate_section(config: RebalancingConfig, decision: GateDecision) -> str:
    n = decision.numbers
    per_checkpoint = decision.provenance.groupby("checkpoint")["memorisation_flagged"].agg(["size", "mean"])
    rows = "\n".join(f"  | `{c}` | {int(r['size'])} | {r['mean']:.3f} |" for c, r in per_checkpoint.iterrows())
    feature = n.get("gate.feature_threshold", float("nan"))
    feature_text = "" if feature != feature else (
        f"; feature space (cosine of centred features): {feature:.4f}"
        + (" (flags too)" if decision.flag_on_features else " (recorded, does not flag: see parameters)"))
    return f"""- **Memorisation gate:** every synthetic image was compared with every training image
  (flips and shifts searched) in pixel space (normalised cross-correlation, float) and in
  the domain encoder's feature space. Threshold: the {n['gate.percentile']:g}th percentile of the
  nearest-neighbour similarity of {int(n['gate.held_out_count'])} held-out real images to the
  training set: pixel **{n['gate.pixel_threshold']:.4f}**{feature_text}.
  Self-test: {int(n['gate.planted_count'])} training images planted with noise, crops, flips,
  shifts and intensity jitter; **recall {n['gate.self_test_recall']:.3f}** ({int(n['gate.planted_missed'])} missed).
  Flagged {int(n['gate.flagged_count'])} of {int(n['gate.candidate_count'])} synthetic images; action
  `{config.gate_action}`: **{int(n['gate.dropped_count'])} dropped**, {int(n['published_synthetic'])} published.
  `provenance.csv` holds each image's nearest training image (`nn_pixel_neighbour_index`, a
  row of the slice manifest), its similarity and the transform found.

  | checkpoint | synthetic images | fraction flagged |
  |---|---|---|
{rows}"""


def _card(config: RebalancingConfig, counts: pd.DataFrame, provenance: pd.DataFrame, size: int,
          decision: GateDecision) -> str:
    table = "\n".join(f"| {r.label} | {r.real} | {r.synthetic} | {r.real + r.synthetic} |" for r in counts.itertuples())
    checkpoint = provenance["checkpoint"].iloc[0] if len(provenance) else "-"
    sampler = ", ".join(f"{k}={v}" for k, v in config.sampler.items())
    gate = _gate_section(config, decision)
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
  the generator, `parameters_evaluation.yml` for the gate).
{gate}
- **Evaluation:** fidelity and utility of the generator are in the evaluation report
  (`data/08_reporting/report.html`, `dvc repro evaluation`).
"""


def publish_rebalanced(
    slices: ArrayStore,
    slice_manifest: pd.DataFrame,
    synthetic: dict[str, np.ndarray],
    decision: GateDecision,
    rebalancing_plan: pd.DataFrame,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The published folder: ImageFolder layout, ``labels.csv``, ``provenance.csv``, ``README.md``.

    Only the synthetic images the memorisation gate kept are published; ``provenance.csv``
    lists every generated image with its gate scores and whether it was published.
    """
    config = _config(params)
    if len(decision.keep) != len(synthetic["images"]):
        raise ValueError(f"The gate decided on {len(decision.keep)} images but {len(synthetic['images'])} were generated.")
    provenance = decision.provenance.assign(published=decision.keep)
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
    for row in provenance[provenance["published"]].itertuples():
        path = f"train/{row.label}/synthetic_{row.index:06d}.png"
        files[path] = to_png_pixels(images[row.index])
        rows.append({"path": path, "label": row.label, "class_id": names.index(row.label), "is_synthetic": True,
                     "family": row.family, "checkpoint": row.checkpoint, "sampler": row.sampler, "steps": row.steps,
                     "guidance": row.guidance, "seed": row.seed, "batch_position": row.batch_position,
                     "nn_pixel_similarity": row.nn_pixel_similarity,
                     "nn_pixel_neighbour_index": row.nn_pixel_neighbour_index})
    labels = pd.DataFrame(rows)
    counts = (labels.groupby(["label", "is_synthetic"]).size().unstack(fill_value=0)
              .reindex(index=names, columns=[False, True], fill_value=0)
              .rename(columns={False: "real", True: "synthetic"}).reset_index())
    files["labels.csv"] = labels
    files["provenance.csv"] = provenance
    files["README.md"] = _card(config, counts, provenance, size, decision)
    logger.info("Published %d real + %d synthetic images", int(counts["real"].sum()), int(counts["synthetic"].sum()))
    return files
