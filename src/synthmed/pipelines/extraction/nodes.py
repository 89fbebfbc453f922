"""Nodes of the ``extraction`` pipeline: parse the parameter block, call
`synthmed.imaging.extraction`, return (the slicing and patching rules are documented there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthmed.core.config import from_params
from synthmed.datasets.array_store import ArrayStore
from synthmed.imaging import extraction, lesion_patches, volumes
from synthmed.imaging.extraction import PatchConfig, SliceConfig
from synthmed.imaging.figures import class_grid


def extract_slices(
    preprocessed_images: ArrayStore,
    preprocessed_masks: ArrayStore,
    preprocessed_foreground: ArrayStore,
    preprocessed_manifest: pd.DataFrame,
    split_table: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """2D slices of every volume along the configured planes (`synthmed.imaging.extraction.extract_slices`)."""
    config = from_params(SliceConfig, params, "extraction.slices")
    return extraction.extract_slices(preprocessed_images, preprocessed_masks, preprocessed_foreground,
                                     preprocessed_manifest, split_table, config)


def extract_patches(
    preprocessed_images: ArrayStore,
    preprocessed_masks: ArrayStore,
    preprocessed_foreground: ArrayStore,
    preprocessed_manifest: pd.DataFrame,
    split_table: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Structure and normal patches of every masked 2D image (`synthmed.imaging.extraction.extract_patches`)."""
    config = from_params(PatchConfig, params, "extraction.patches")
    return extraction.extract_patches(preprocessed_images, preprocessed_masks, preprocessed_foreground,
                                      preprocessed_manifest, split_table, config)


def extract_volumes(
    preprocessed_images: ArrayStore,
    preprocessed_masks: ArrayStore,
    preprocessed_manifest: pd.DataFrame,
    split_table: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Sub-volumes ``(N, C, D, H, W)`` with label maps and lesion masks (`synthmed.imaging.volumes`);
    with ``extraction.volumes.enabled: false`` an empty store and manifest (the 2D studies need none)."""
    config = from_params(volumes.VolumeConfig, params, "extraction.volumes")
    if not config.enabled:
        return volumes.empty_volumes(config), pd.DataFrame(columns=volumes.VOLUME_COLUMNS)
    return volumes.extract_volumes(preprocessed_images, preprocessed_masks, preprocessed_manifest, split_table, config)


def extract_lesion_patches(
    preprocessed_images: ArrayStore,
    preprocessed_masks: ArrayStore,
    preprocessed_manifest: pd.DataFrame,
    split_table: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Lesion-centred and normal patches of the labelled volumes, inside each patient's split and
    normalised per patch (``synthmed.imaging.lesion_patches``: what the demo's DCGAN learns); with
    ``extraction.lesion_patches.enabled: false`` an empty store and manifest."""
    config = from_params(lesion_patches.LesionPatchExtraction, params, lesion_patches.WHERE)
    if not config.enabled:
        return lesion_patches.empty_patches(config.patches.patch_px)
    arrays, manifest = lesion_patches.cut_patches(preprocessed_images, preprocessed_masks, preprocessed_manifest,
                                                  split_table, config.patches)
    arrays["images"] = lesion_patches.normalise_patches(arrays["images"], arrays["brain"], config.normalisation)
    return arrays, manifest


def plot_slice_preview(slices: ArrayStore, slice_params: dict[str, Any], preview: dict[str, Any]) -> Figure:
    """A grid of example slices, one row per class (plane, or normal / lesion)."""
    config = from_params(SliceConfig, slice_params, "extraction.slices")
    return class_grid(np.asarray(slices["images"]), np.asarray(slices["labels"]), config.class_names(),
                      per_class=int(preview["per_class"]), title="Slices per class (all splits)",
                      rng=np.random.default_rng(int(preview["seed"])))


def plot_patch_preview(patches: ArrayStore, patch_params: dict[str, Any], preview: dict[str, Any]) -> Figure:
    """A grid of example patches, one row per class, with the mask drawn as a contour."""
    config = from_params(PatchConfig, patch_params, "extraction.patches")
    names = [config.class_names["structure"], config.class_names["normal"]]
    return class_grid(np.asarray(patches["images"]), np.asarray(patches["labels"]), names,
                      per_class=int(preview["per_class"]), title="Patches per class (all splits)",
                      masks=np.asarray(patches["masks"]), rng=np.random.default_rng(int(preview["seed"])))


def plot_lesion_patch_preview(patches: ArrayStore, preview: dict[str, Any]) -> Figure:
    """A grid of example lesion-centred and normal patches, the lesion mask drawn as a contour."""
    return class_grid(np.asarray(patches["images"]), np.asarray(patches["labels"]), list(lesion_patches.CLASS_NAMES),
                      per_class=int(preview["per_class"]), title="Lesion patches per class (all splits)",
                      masks=np.asarray(patches["masks"]), rng=np.random.default_rng(int(preview["seed"])))


def summarise_extraction(slice_manifest: pd.DataFrame, patch_manifest: pd.DataFrame,
                         lesion_patch_manifest: pd.DataFrame) -> dict[str, float]:
    """Slices, patches and lesion patches per split and class, for DVC metrics and MLflow."""
    metrics: dict[str, float] = {"slices_total": len(slice_manifest), "patches_total": len(patch_manifest),
                                 "lesion_patches_total": len(lesion_patch_manifest)}
    for prefix, table in (("slices", slice_manifest), ("patches", patch_manifest),
                          ("lesion_patches", lesion_patch_manifest)):
        for (split, label), n in table.groupby(["split", "label"]).size().items():
            metrics[f"{prefix}_{split}_{label}"] = int(n)
    return metrics
