"""Nodes of the ``training`` pipeline (one template, namespaced per family).

Training writes checkpoints while it runs (that is its point: a killed run resumes), under
``run.checkpoint_root/<family>-<digest>`` (``synthmed.generators.run.checkpoint_folder``).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from synthmed.core.config import from_params
from synthmed.core.manifest import class_names_of
from synthmed.datasets.array_store import ArrayStore
from synthmed.generators.base import SamplerSpec, TrainedGenerator
from synthmed.generators.previews import check_training_input, preview_conditions, sample_grid
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.run import RunConfig, checkpoint_folder, model_card_facts, source_inputs
from synthmed.generators.tracking import active_tracker
from synthmed.generators.training import (
    ArrayBatches,
    TrainingConfig,
    reproducible_history,
    resolved_precision,
    train,
)
from synthmed.imaging.figures import loss_curves

logger = logging.getLogger(__name__)


def train_generator(
    slices: ArrayStore,
    slice_manifest: pd.DataFrame,
    patches: ArrayStore,
    patch_manifest: pd.DataFrame,
    lesion_patches: ArrayStore,
    lesion_patch_manifest: pd.DataFrame,
    family: str,
    model_params: dict[str, Any],
    training_params: dict[str, Any],
    run_params: dict[str, Any],
) -> tuple[TrainedGenerator, pd.DataFrame, Figure, Figure]:
    """Train one generator family on the train split of slices, patches or lesion patches.

    Args:
        slices, slice_manifest, patches, patch_manifest, lesion_patches, lesion_patch_manifest:
            extraction outputs; ``run.source`` picks one (images ``(N, C, H, W)`` float32 in
            [-1, 1], masks, labels).
        family: a family of ``synthmed.generators.registry.FAMILIES``.
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
    sampler = from_params(SamplerSpec, run.preview_sampler, f"{family}.run.preview_sampler")
    store, manifest = source_inputs(run, family, "training", {
        "slices": (slices, slice_manifest), "patches": (patches, patch_manifest),
        "lesion_patches": (lesion_patches, lesion_patch_manifest)})
    indices = manifest.loc[manifest["split"] == run.split, "index"].to_numpy()
    class_names = class_names_of(manifest)
    check_training_input(family, model_config, store["images"].shape, class_names, run.source)
    run_dir = checkpoint_folder(run, family, model_config, training,
                                [store.info(k)["sha256"] for k in ("images", "labels", "masks")])
    conditions = preview_conditions(model_config, store, indices, run.preview_per_class, model_config.num_classes)

    def grid(models):
        return sample_grid(spec, model_config, models, conditions, sampler, class_names, run.preview_seed,
                           title=f"{family}: samples")

    logger.info("Training %s on %d %s examples (%s); checkpoints in %s", family, len(indices), run.source,
                run.split, run_dir)
    dataset = ArrayBatches(store, indices, size=model_config.image_size)
    models, history = train(spec, model_config, training, dataset, run_dir, tracker=active_tracker(family, grid))
    history = reproducible_history(history)  # images/s went to the log and MLflow; DVC's files stay byte-stable
    history_table = pd.DataFrame(history)
    card = model_card_facts(run, training, manifest, indices, class_names,
                            {k: store.info(k)["sha256"] for k in ("images", "labels", "masks")}, history,
                            precision=resolved_precision(training))
    return (TrainedGenerator(family, model_config, models, tuple(class_names), card), history_table, grid(models),
            loss_curves({family: history_table}))
