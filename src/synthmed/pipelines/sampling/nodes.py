"""Nodes of the ``sampling`` pipeline (one template, namespaced per family)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthmed.core.config import from_params
from synthmed.datasets.array_store import ArrayStore
from synthmed.datasets.generator import TrainedGenerator
from synthmed.generators.base import SamplerSpec
from synthmed.generators.common import weights_digest
from synthmed.generators.export import to_png_pixels
from synthmed.generators.registry import get_family
from synthmed.generators.sampling import PLAN_COLUMNS, Sampled, generate_from_plan
from synthmed.metrics.figures import class_grid
from synthmed.pipelines.training.nodes import RunConfig, class_names_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    """``params:<family>.sampling``."""

    plan: tuple[Mapping[str, Any], ...]
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "ddim", "steps": 50})
    seed: int = 0
    batch_size: int = 32
    real_split: str = "validation"


def sampling_plan(params: dict[str, Any]) -> pd.DataFrame:
    """The plan rows of ``params`` as a table (``condition, label, count, case``)."""
    config = from_params(SamplingConfig, params, "sampling")
    rows = [{"condition": r.get("condition", "class"), "label": r.get("label", ""), "count": r.get("count"),
             "case": r.get("case", "")} for r in config.plan]
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


def checkpoint_id(generator: TrainedGenerator) -> str:
    """The short hash that identifies a trained generator in provenance tables."""
    return weights_digest(generator.models)


def sample_generator(
    generator: TrainedGenerator,
    plan: pd.DataFrame,
    slices: ArrayStore,
    slice_manifest: pd.DataFrame,
    patches: ArrayStore,
    patch_manifest: pd.DataFrame,
    run_params: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], Figure]:
    """Generate what ``plan`` asks for; masks and inpainting context come from ``real_split``.

    Returns:
        ``(arrays, provenance, png_files, grid)``: arrays ``images`` ``(N, C, H, W)``
        float32 in [-1, 1], ``labels``, ``masks``; one provenance row per image; PNG files
        ``<label>/<index>.png``; a preview grid.
    """
    config = from_params(SamplingConfig, params, f"{generator.family}.sampling")
    run = from_params(RunConfig, run_params, f"{generator.family}.run")
    store, manifest = (slices, slice_manifest) if run.source == "slices" else (patches, patch_manifest)
    names = class_names_of(manifest)
    real_indices = manifest.loc[manifest["split"] == config.real_split, "index"].to_numpy()
    sampler = from_params(SamplerSpec, config.sampler, f"{generator.family}.sampling.sampler")
    result: Sampled = generate_from_plan(
        get_family(generator.family), generator.config, generator.models, plan, names, sampler,
        seed=config.seed, batch_size=config.batch_size, checkpoint=checkpoint_id(generator),
        real=store, real_indices=real_indices,
    )
    logger.info("Sampled %d %s images with %s (%d steps)", len(result.images), generator.family, sampler.name,
                sampler.steps)
    pngs = {f"{row.label or 'samples'}/{row.index:06d}.png": to_png_pixels(result.images[row.index])
            for row in result.provenance.itertuples()}
    labels = result.labels if names else result.labels * 0
    grid = class_grid(result.images, labels, names or ["samples"], per_class=8,
                      title=f"{generator.family}: sampled ({sampler.name}, {sampler.steps} steps)",
                      masks=result.masks if result.masks.any() else None, rng=np.random.default_rng(0))
    arrays = {"images": result.images, "labels": result.labels, "masks": result.masks}
    return arrays, result.provenance, pngs, grid
