"""Nodes of the ``study_mask_to_image`` pipeline: parse parameters, call the library, return.

The study builds its own fundus photographs with the sample's function and parameters
(``sample_data.fundus``, overridden by ``study_mask_to_image.photographs``), so its size does
not weigh on the demo's sample; see ``synthmed.protocols.mask_to_image`` for the protocol.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.generators.base import SamplerSpec
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.run import RunConfig, checkpoint_folder
from synthmed.generators.sampling import PLAN_COLUMNS, generate_from_plan
from synthmed.generators.tracking import active_tracker
from synthmed.generators.training import ArrayBatches, TrainingConfig, reproducible_history, train
from synthmed.imaging.fundus_sample import FundusSampleConfig, build_fundus_photos
from synthmed.protocols.mask_to_image import (
    METRIC_LABELS,
    METRICS,
    MaskToImageConfig,
    comparison_grid,
    photo_arrays,
    published_rows,
    region_split,
    study_rows,
)
from synthmed.protocols.studies import figure_png64, render_study_page, render_study_section, study_table

logger = logging.getLogger(__name__)

FAMILY = "pix2pix"
WHERE = "study_mask_to_image"


def _config(params: dict[str, Any]) -> MaskToImageConfig:
    return from_params(MaskToImageConfig, params, WHERE)


def build_study_photographs(fundus_params: dict[str, Any], params: dict[str, Any]
                            ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The study's photographs resized whole (``images``, ``masks``, ``labels``) and their split by region."""
    import skimage.data

    config = _config(params)
    photographs = from_params(FundusSampleConfig, {**fundus_params, **config.photographs}, f"{WHERE}.photographs")
    photos = build_fundus_photos(skimage.data.retina(), photographs)
    split = region_split(photos, config.split, config.image_size)
    aperture = photographs.fov_threshold if config.aperture_channel else None
    return photo_arrays(photos, config.image_size, config.mask_threshold, aperture), split


def train_study_generator(arrays: dict[str, np.ndarray], split: pd.DataFrame, params: dict[str, Any]):
    """Pix2Pix trained on the train regions with synthmed's trainer; ``(models, history)``."""
    config = _config(params)
    spec = get_family(FAMILY)
    model_config = config_from_params(FAMILY, dict(config.model))
    if model_config.image_size != config.image_size:
        raise ValueError(
            f"{WHERE}.model.image_size={model_config.image_size} differs from {WHERE}.image_size="
            f"{config.image_size}: the model maps masks to whole images of the study's size; set both alike."
        )
    if model_config.mask_channels != config.mask_channels:
        raise ValueError(
            f"{WHERE}.model.mask_channels={model_config.mask_channels}, but the study's masks have "
            f"{config.mask_channels} channel(s) (the vessels{', the aperture' if config.aperture_channel else ''}; "
            f"{WHERE}.aperture_channel={config.aperture_channel}); set mask_channels to {config.mask_channels}."
        )
    training = from_params(TrainingConfig, config.training, f"{WHERE}.training")
    train_indices = np.flatnonzero(split["split"].to_numpy() == "train")
    run = RunConfig(source="patches", split="train", checkpoint_root=config.checkpoint_root)
    run_dir = checkpoint_folder(run, WHERE, model_config, training,
                                [sha256_bytes(np.ascontiguousarray(arrays[k]).tobytes()) for k in ("images", "masks")]
                                + [sha256_bytes(train_indices.tobytes())])
    logger.info("Training the mask-to-image Pix2Pix on %d whole images (%d px); checkpoints in %s",
                len(train_indices), config.image_size, run_dir)
    models, history = train(spec, model_config, training, ArrayBatches(arrays, train_indices), run_dir,
                            tracker=active_tracker(WHERE))
    return models, pd.DataFrame(reproducible_history(history))


def evaluate_study(arrays: dict[str, np.ndarray], split: pd.DataFrame, models, params: dict[str, Any]
                   ) -> tuple[pd.DataFrame, str, Figure, dict[str, float]]:
    """Paired MSE / SSIM / PSNR on the held-out regions' images: the table, the HTML page, the grid, metrics."""

    config = _config(params)
    evaluation = config.evaluation
    spec = get_family(FAMILY)
    model_config = config_from_params(FAMILY, dict(config.model))
    test = np.flatnonzero(split["split"].to_numpy() == "test")
    train_indices = np.flatnonzero(split["split"].to_numpy() == "train")
    plan = pd.DataFrame([{"condition": "mask", "label": "", "count": len(test), "case": ""}], columns=PLAN_COLUMNS)
    sampled = generate_from_plan(spec, model_config, models, plan, [], SamplerSpec(name="ddim", steps=1),
                                 seed=evaluation.sample_seed, batch_size=evaluation.batch_size, checkpoint=WHERE,
                                 real=arrays, real_indices=test)
    real = arrays["images"][test]
    n_train_regions = split.loc[split["split"] == "train", "region"].nunique()
    rows = study_rows(sampled.images, real, arrays["images"][train_indices], evaluation,
                      groups=split["region"].to_numpy()[test], model_label="pix2pix (ours)",
                      model_source=f"vessel mask -> whole image, {config.image_size} px; trained on "
                                   f"{len(train_indices)} images of {n_train_regions} regions, "
                                   f"{config.training['steps']} steps")
    table = study_table(rows, published_rows(config.published), METRICS, level=evaluation.level)
    names = split["name"].to_numpy()[test]
    figure = comparison_grid(arrays["masks"][test], real, sampled.images, names, evaluation.grid_examples)
    test_regions = sorted(split.loc[split["split"] == "test", "region"].unique())
    notes = [
        f"Held-out images: {len(test)} photographs of {len(test_regions)} source regions ({', '.join(test_regions)}) "
        "never seen in training (the split is by region; regions share no vessel pixel). All photographs come "
        "from one eye (scikit-image's retina): held-out regions are other vessels of the same retina, not "
        "another patient. The intervals draw the held-out regions whole (a cluster bootstrap: the copies of "
        f"one region are not independent), so with {len(test_regions)} regions they are wide.",
        "Images in [-1, 1]: MSE on that scale, PSNR with a data range of 2, SSIM with a Gaussian window "
        "(synthmed.metrics.fidelity.paired_metrics). Vessel masks are pseudo-labels (Sato filter).",
    ]
    section = render_study_section(
        title="Mask to image: Pix2Pix from vessel mask to whole fundus image", anchor="study-mask-to-image",
        table=table, metrics=METRICS, metric_labels=METRIC_LABELS, digits={"mse": 4, "ssim": 3, "psnr": 2},
        figures=[("Held-out images: vessel mask | real | synthetic", figure_png64(figure))], notes=notes)
    metrics = {"n_test": float(len(test)), "n_train": float(len(train_indices)),
               "n_test_regions": float(len(test_regions))}
    for row in rows:
        key = row.kind if row.kind != "ours" else "pix2pix"
        for m in METRICS:
            for part in ("mean", "low", "high"):
                metrics[f"{key}.{m}.{part}"] = float(row.summaries[m][part])
    logger.info("Mask-to-image study on %d held-out images: %s", len(test),
                {m: round(rows[0].summaries[m]["mean"], 4) for m in METRICS})
    return table, render_study_page(title="synthmed study: mask to image", sections=[section]), figure, metrics
