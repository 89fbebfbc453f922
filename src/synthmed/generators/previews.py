"""Sample grids of a generator, conditioned on real examples (classes, masks, label maps).

Volume families (``(N, C, D, H, W)``) are shown by their central axial slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from synthmed.generators.base import Conditions, FamilySpec, SamplerSpec, label_map_array
from synthmed.generators.run import VOLUME_SOURCES
from synthmed.imaging.figures import class_grid


def preview_conditions(config, store: Mapping[str, np.ndarray], indices: np.ndarray, per_class: int,
                       num_classes: int) -> Conditions:
    """Conditions for a preview grid: ``per_class`` examples of every class, masks from real data.

    Row ``c`` of the grid is class ``c``; its masks, label maps (mask- and label-map-conditional
    families) and inpainting context (with the left half kept) come from ``per_class`` real
    examples of that class among ``indices``, evenly spaced in store order (the middle of each of
    ``per_class`` equal runs), so they spread over the split's patients instead of being
    neighbouring slices of the first one (a class absent from ``indices`` takes examples of any
    class). Without classes, the examples are spread over all of ``indices``. Works for images
    ``(N, C, H, W)`` and volumes ``(N, C, D, H, W)`` alike.
    """
    needed = config.needed_conditions()
    classes = max(num_classes, 1)
    n = per_class * classes
    indices = np.sort(np.asarray(indices))
    labels = np.asarray(store["labels"][indices]).reshape(-1) if num_classes > 0 else np.zeros(len(indices), int)
    picks = np.concatenate([_spread(indices[labels == c] if (labels == c).any() else indices, per_class)
                            for c in range(classes)])
    rows, back = np.unique(picks, return_inverse=True)  # read each row once, in store order
    masks = torch.from_numpy((np.asarray(store["masks"][rows])[back] > 0).astype(np.float32))
    images = torch.from_numpy(np.array(store["images"][rows], dtype=np.float32)[back])
    label_maps = None
    if "label_maps" in needed:
        label_maps = torch.from_numpy(np.array(label_map_array(store)[rows], dtype=np.float32)[back])
    if images.shape[-1] != config.image_size:  # training downsamples the same way
        images = torch.nn.functional.interpolate(images, size=config.image_size, mode="area")
        masks = torch.nn.functional.interpolate(masks, size=config.image_size, mode="nearest")
        if label_maps is not None:
            label_maps = torch.nn.functional.interpolate(label_maps, size=config.image_size, mode="nearest")
    keep = torch.zeros_like(masks)
    keep[..., : keep.shape[-1] // 2] = 1.0
    return Conditions(
        n=n,
        labels=torch.arange(n) // per_class if "labels" in needed else None,
        masks=masks if "masks" in needed else None,
        images=images if "inpaint" in needed else None,
        keep=keep if "inpaint" in needed else None,
        label_maps=label_maps.round().to(torch.int64) if label_maps is not None else None,
    )


def _spread(rows: np.ndarray, count: int) -> np.ndarray:
    """``count`` of ``rows``, the middle one of each of ``count`` equal runs (repeats when there are fewer)."""
    return rows[((np.arange(count) + 0.5) * len(rows) / count).astype(np.int64)]


def sample_grid(spec: FamilySpec, config, models: nn.ModuleDict, conditions: Conditions, sampler: SamplerSpec,
                class_names: Sequence[str], seed: int, title: str) -> Figure:
    """Generate for ``conditions`` with ``seed`` and lay the images out one row per class.

    Volumes are shown by their central slice along the first spatial axis (D), masks alike.
    """
    images = spec.sample(models, config, conditions, sampler, torch.Generator().manual_seed(seed))
    if images.ndim == 5:
        images = images[:, :, images.shape[2] // 2]
    labels = conditions.labels.numpy() if conditions.labels is not None else np.zeros(conditions.n, dtype=np.int64)
    names = list(class_names) if conditions.labels is not None else ["samples"]
    per_row = int(np.bincount(labels).max())
    masks = conditions.masks.numpy() if conditions.masks is not None else None
    if masks is not None and masks.ndim == 5:
        masks = masks[:, :, masks.shape[2] // 2]
    return class_grid(images.numpy(), labels, names, per_class=per_row, title=title, masks=masks,
                      rng=np.random.default_rng(0))


def check_training_input(family: str, config, image_shape: Sequence[int], class_names: Sequence[str],
                         source: str, spatial_dims: int = 2) -> None:
    """Refuse training data the model cannot take: none at all, images or volumes (``spatial_dims``
    sides), channels, a size ``image_size`` divides, classes."""
    if not image_shape or int(image_shape[0]) == 0:
        switch = f", or extraction.{source}.enabled is false" if source in ("lesion_patches", "volumes") else ""
        raise ValueError(
            f"{family}.run.source is {source!r}, but the extraction wrote no {source} (an empty store: the data has "
            f"none{switch}): point {family}.run.source at a source the data has (conf/template trains the DCGAN "
            "on slices)."
        )
    if (source in VOLUME_SOURCES) != (spatial_dims == 3) or len(image_shape) != 2 + spatial_dims:
        kind = "volumes (N, C, D, H, W)" if spatial_dims == 3 else "images (N, C, H, W)"
        raise ValueError(
            f"{family} trains on {kind}, but {source} are shaped {tuple(image_shape)}: point {family}.run.source "
            "at an extraction output of that kind."
        )
    channels, stored = int(image_shape[1]), int(image_shape[-1])
    if channels != config.channels or stored % config.image_size:
        raise ValueError(
            f"{family}.model expects {config.channels}-channel {config.image_size} px images, but {source} are "
            f"{channels}-channel {stored} px: channels must match and image_size must divide the stored size "
            "(set them in parameters_training.yml)."
        )
    if config.num_classes and config.num_classes != len(class_names):
        raise ValueError(
            f"{family}.model.num_classes={config.num_classes} but {source} has {len(class_names)} classes "
            f"{list(class_names)}."
        )
