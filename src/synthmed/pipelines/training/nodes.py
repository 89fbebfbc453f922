"""Nodes of the ``training`` pipeline (one template, namespaced per family).

Training writes checkpoints while it runs (that is its point: a killed run resumes), under
``run.checkpoint_root/<family>-<digest>``, where the digest covers the model and training
parameters and the training arrays, so a changed configuration never resumes an old run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from synthmed.core.config import from_params
from synthmed.datasets.array_store import ArrayStore
from synthmed.datasets.generator import TrainedGenerator
from synthmed.generators.base import SamplerSpec
from synthmed.generators.previews import preview_conditions, sample_grid
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.tracking import active_tracker
from synthmed.generators.training import ArrayBatches, TrainingConfig, train

logger = logging.getLogger(__name__)

SOURCES = ("slices", "patches")


@dataclass(frozen=True)
class RunConfig:
    """``params:<family>.run``: what to train on and where checkpoints go."""

    source: str = "slices"
    split: str = "train"
    checkpoint_root: str = "data/06_models/checkpoints"
    preview_per_class: int = 6
    preview_sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "ddim", "steps": 25})
    preview_seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"run.source must be one of {list(SOURCES)}, got {self.source!r}.")


def class_names_of(manifest: pd.DataFrame) -> list[str]:
    """Class names by class id, from an extraction manifest (``class_id``, ``label``)."""
    table = manifest.drop_duplicates("class_id").sort_values("class_id")
    names = dict(zip(table["class_id"], table["label"]))
    return [names.get(i, str(i)) for i in range(int(table["class_id"].max()) + 1)] if len(table) else []


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _loss_figure(history: pd.DataFrame, family: str) -> Figure:
    losses = [c for c in history.columns if c.startswith("loss")]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for column in losses:
        ax.plot(history["step"], history[column], label=column)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{family} training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def train_generator(
    slices: ArrayStore,
    slice_manifest: pd.DataFrame,
    patches: ArrayStore,
    patch_manifest: pd.DataFrame,
    family: str,
    model_params: dict[str, Any],
    training_params: dict[str, Any],
    run_params: dict[str, Any],
) -> tuple[TrainedGenerator, pd.DataFrame, Figure, Figure]:
    """Train one generator family on the train split of slices or patches.

    Args:
        slices, slice_manifest, patches, patch_manifest: extraction outputs; ``run.source``
            picks one (images ``(N, C, H, W)`` float32 in [-1, 1], masks, labels).
        family: ``ddpm``, ``pix2pix`` or ``dcgan``.
        model_params: the family's ``Config`` keys.
        training_params: ``TrainingConfig`` keys.
        run_params: ``RunConfig`` keys.

    Returns:
        ``(generator, history, sample_grid, loss_curve)``.
    """
    spec = get_family(family)
    model_config = config_from_params(family, model_params)
    training = from_params(TrainingConfig, training_params, f"{family}.training")
    run = from_params(RunConfig, run_params, f"{family}.run")
    store, manifest = (slices, slice_manifest) if run.source == "slices" else (patches, patch_manifest)
    indices = manifest.loc[manifest["split"] == run.split, "index"].to_numpy()
    images = store["images"]
    if images.shape[1] != model_config.channels or images.shape[-1] % model_config.image_size:
        raise ValueError(
            f"{family}.model expects {model_config.channels}-channel {model_config.image_size} px images, but "
            f"{run.source} are {images.shape[1]}-channel {images.shape[-1]} px: channels must match and "
            "image_size must divide the stored size (set them in parameters_training.yml)."
        )
    class_names = class_names_of(manifest)
    if model_config.num_classes and model_config.num_classes != len(class_names):
        raise ValueError(
            f"{family}.model.num_classes={model_config.num_classes} but {run.source} has {len(class_names)} "
            f"classes {class_names}."
        )
    data_digest = [store.info(k)["sha256"] for k in ("images", "labels", "masks")]
    run_dir = Path(run.checkpoint_root) / f"{family}-{_digest(asdict(model_config), asdict(training), data_digest, run.split)}"
    sampler = from_params(SamplerSpec, run.preview_sampler, f"{family}.run.preview_sampler")
    conditions = preview_conditions(model_config, store, indices, run.preview_per_class, model_config.num_classes)

    def grid(models):
        return sample_grid(spec, model_config, models, conditions, sampler, class_names, run.preview_seed,
                           title=f"{family}: samples")

    logger.info("Training %s on %d %s examples (%s); checkpoints in %s", family, len(indices), run.source,
                run.split, run_dir)
    dataset = ArrayBatches(store, indices, size=model_config.image_size)
    models, history = train(spec, model_config, training, dataset, run_dir,
                            tracker=active_tracker(family, grid))
    history_table = pd.DataFrame(history)
    return (
        TrainedGenerator(family, model_config, models),
        history_table,
        grid(models),
        _loss_figure(history_table, family),
    )
