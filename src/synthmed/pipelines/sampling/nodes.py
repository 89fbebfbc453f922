"""Nodes of the ``sampling`` pipeline (one template, namespaced per family)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthmed.core import distributed
from synthmed.core.config import from_params
from synthmed.core.manifest import class_names_of
from synthmed.datasets.array_store import ArrayStore
from synthmed.generators.base import SamplerSpec, TrainedGenerator
from synthmed.generators.export import to_png_pixels
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.run import RunConfig, checkpoint_folder, source_inputs
from synthmed.generators.sampling import (
    Sampled,
    SamplingConfig,
    ThroughputConfig,
    checkpoint_id,
    generate_from_plan,
    plan_table,
    sample_checkpoints,
)
from synthmed.generators.training import TrainingConfig, checkpoint_dirs
from synthmed.imaging.figures import class_grid

logger = logging.getLogger(__name__)


def sampling_plan(params: dict[str, Any]) -> pd.DataFrame:
    """The plan rows of ``params`` as a table (``condition, label, count, case``)."""
    return plan_table(from_params(SamplingConfig, params, "sampling"))


def sample_generator(
    generator: TrainedGenerator,
    plan: pd.DataFrame,
    slices: ArrayStore,
    slice_manifest: pd.DataFrame,
    patches: ArrayStore,
    patch_manifest: pd.DataFrame,
    lesion_patches: ArrayStore,
    lesion_patch_manifest: pd.DataFrame,
    run_params: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], Figure]:
    """Generate what ``plan`` asks for; masks and inpainting context come from ``real_split``.

    Returns:
        ``(arrays, provenance, png_files, grid)``: arrays ``images`` ``(N, C, H, W)``
        float32 in [-1, 1], ``labels``, ``masks``; one provenance row per image; PNG files
        ``<label>/<index>.png``; a preview grid. On several processes (``synthmed launch``) every
        process samples its share and holds all the images; the PNGs and the grid, which only
        the main process saves, are made there alone (the others return ``{}`` and None).
    """
    real = {"slices": (slices, slice_manifest), "patches": (patches, patch_manifest),
            "lesion_patches": (lesion_patches, lesion_patch_manifest)}
    config, run, sampler, store, manifest = _parse(generator.family, real, run_params, params)
    names = class_names_of(manifest)
    real_indices = condition_rows(manifest, config.real_split, config.seed)
    spec = get_family(generator.family)
    result: Sampled = generate_from_plan(
        spec, generator.config, generator.models, plan, names, sampler,
        seed=config.seed, batch_size=config.batch_size, checkpoint=checkpoint_id(generator),
        real=store, real_indices=real_indices, throughput=_throughput(generator.family, config),
    )
    logger.info("Sampled %d %s images (%s)", len(result.images), generator.family, spec.describe_sampler(sampler))
    arrays = {"images": result.images, "labels": result.labels, "masks": result.masks}
    if not distributed.is_main_process():  # files only: the main process encodes and saves them
        return arrays, result.provenance, {}, None
    pngs = {f"{row.label or 'samples'}/{row.index:06d}.png": to_png_pixels(result.images[row.index])
            for row in result.provenance.itertuples()}
    labels = result.labels if names else result.labels * 0
    grid = class_grid(result.images, labels, names or ["samples"], per_class=8,
                      title=f"{generator.family}: sampled ({spec.describe_sampler(sampler)})",
                      masks=result.masks if result.masks.any() else None, rng=np.random.default_rng(0))
    return arrays, result.provenance, pngs, grid


def condition_rows(manifest: pd.DataFrame, split: str, seed: int) -> np.ndarray:
    """Every ``split`` row's store index, in an order seeded by ``seed``: mask and inpainting rows of
    the plan take them from the front, so a plan smaller than the split conditions on rows spread
    over its patients and classes. In manifest order the 64 masks of the cohort's Pix2Pix plan were
    the lowest 64 slices of one validation patient, none with a lesion.
    """
    rows = manifest.loc[manifest["split"] == split, "index"].to_numpy()
    return np.random.default_rng(seed).permutation(rows)


def _throughput(family: str, config: SamplingConfig) -> ThroughputConfig:
    return from_params(ThroughputConfig, config.throughput, f"{family}.sampling.throughput")


def _parse(family: str, real: dict[str, tuple[ArrayStore, pd.DataFrame]], run_params: dict[str, Any],
           params: dict[str, Any]) -> tuple[SamplingConfig, RunConfig, SamplerSpec, ArrayStore, pd.DataFrame]:
    """The sampling settings and the store and manifest of the family's ``run.source`` (of ``real``)."""
    config = from_params(SamplingConfig, params, f"{family}.sampling")
    run = from_params(RunConfig, run_params, f"{family}.run")
    sampler = from_params(SamplerSpec, config.sampler, f"{family}.sampling.sampler")
    store, manifest = source_inputs(run, family, "sampling", real)
    return config, run, sampler, store, manifest


def sample_retained_checkpoints(
    generator: TrainedGenerator,
    plan: pd.DataFrame,
    slices: ArrayStore,
    slice_manifest: pd.DataFrame,
    patches: ArrayStore,
    patch_manifest: pd.DataFrame,
    lesion_patches: ArrayStore,
    lesion_patch_manifest: pd.DataFrame,
    run_params: dict[str, Any],
    params: dict[str, Any],
    model_params: dict[str, Any],
    training_params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """With ``sampling.retained_checkpoints``: the plan from every kept training checkpoint but the final one.

    The checkpoints are those training left under ``run.checkpoint_root/<family>-<digest>``
    (``training.keep_checkpoints``); none there (e.g. a ``dvc pull`` without training) gives a
    warning and no samples. Returns arrays (``images``, ``labels``, ``masks``) and provenance
    with ``checkpoint_step``; both empty when the option is off.
    """
    family = generator.family
    real = {"slices": (slices, slice_manifest), "patches": (patches, patch_manifest),
            "lesion_patches": (lesion_patches, lesion_patch_manifest)}
    config, run, sampler, store, manifest = _parse(family, real, run_params, params)
    folders = []
    if config.retained_checkpoints:
        run_dir = checkpoint_folder(run, family, config_from_params(family, model_params),
                                    from_params(TrainingConfig, training_params, f"{family}.training"),
                                    [store.info(k)["sha256"] for k in ("images", "labels", "masks")])
        folders = checkpoint_dirs(run_dir)
        if not folders:
            logger.warning("%s.sampling.retained_checkpoints: no checkpoint in %s (train here to have them); only "
                           "the final generator is sampled.", family, run_dir)
    size, channels = generator.config.image_size, generator.config.channels
    empty = Sampled(np.zeros((0, channels, size, size), np.float32), np.zeros(0, np.int64),
                    np.zeros((0, 1, size, size), np.uint8), pd.DataFrame())
    result = sample_checkpoints(folders, checkpoint_id(generator), plan, class_names_of(manifest), sampler,
                                seed=config.seed, batch_size=config.batch_size, empty=empty, real=store,
                                throughput=_throughput(family, config),
                                real_indices=condition_rows(manifest, config.real_split, config.seed))
    return {"images": result.images, "labels": result.labels, "masks": result.masks}, result.provenance
