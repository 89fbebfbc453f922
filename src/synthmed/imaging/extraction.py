"""Cutting model-ready 2D slices and patches out of preprocessed images, inside each split's region.

Slices and patches are cut inside the region that the split table gives each split, so
a slice or patch never mixes data of two splits. Outputs are model-ready arrays:

- images ``(N, C, S, S)`` float32 in [-1, 1] (C = 1 for volumes, the item's channels for 2D);
- masks ``(N, 1, S, S)`` uint8 labels (zeros when the item has no mask);
- labels ``(N,)`` int64 class indices into the configured class list;

with one manifest row per slice or patch (source item, split, plane/index or patch
coordinates, class). Inputs are plain mappings of arrays by item id and DataFrames; the
``extraction`` pipeline's nodes parse the parameters and call `extract_slices` and
`extract_patches`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from synthmed.core.lazy import lazy_import
from synthmed.core.splits import SPLITS, check_no_leakage
from synthmed.imaging.slicing import (
    PLANES,
    PatchSpec,
    crop_patch,
    foreground_fraction,
    plane_length,
    select_patches,
    slice_indices,
    to_square,
    volume_slice,
)

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")

logger = logging.getLogger(__name__)

SLICE_COLUMNS = ["index", "item_id", "patient_key", "split", "plane", "slice_index", "label", "class_id",
                 "foreground_fraction", "series"]
PATCH_COLUMNS = ["index", "item_id", "patient_key", "split", "row", "col", "label", "class_id",
                 "mask_fraction"]


# What a slice's class is (``extraction.slices.classes``).
CLASS_BY_PLANE = "plane"      # the imaging plane (a template anatomy with no findings)
CLASS_BY_FINDING = "finding"  # normal / lesion, from the item's lesion mask


@dataclass(frozen=True)
class FindingConfig:
    """``params:extraction.slices.finding``: slice classes from the item's lesion mask.

    A slice is ``lesion`` when at least ``min_lesion_px`` of its pixels (at the volume's
    resolution, before resizing) carry one of ``lesion_labels`` in the mask, ``normal``
    when none does; slices in between hold a sliver of lesion that a reader or a
    classifier could call either way, and are left out. Volumes without a mask have no
    known finding and are left out too.
    """

    lesion_labels: tuple[int, ...] = (1,)
    min_lesion_px: int = 10
    class_names: Mapping[str, str] = field(default_factory=lambda: {"normal": "normal", "lesion": "lesion"})

    def __post_init__(self) -> None:
        if not self.lesion_labels or any(int(v) <= 0 for v in self.lesion_labels):
            raise ValueError(
                f"extraction.slices.finding.lesion_labels must list mask values > 0 (0 is background), "
                f"got {list(self.lesion_labels)}.")
        if int(self.min_lesion_px) < 1:
            raise ValueError(f"extraction.slices.finding.min_lesion_px must be at least 1, got {self.min_lesion_px}.")
        if set(self.class_names) != {"normal", "lesion"}:
            raise ValueError(
                "extraction.slices.finding.class_names needs keys 'normal' and 'lesion', "
                f"got {sorted(self.class_names)}.")

    def slice_class(self, mask_slice: np.ndarray) -> str | None:
        """``"normal"``, ``"lesion"`` or None (a lesion sliver) for one 2D mask slice."""
        lesion_px = int(np.isin(mask_slice, self.lesion_labels).sum())
        if lesion_px == 0:
            return "normal"
        return "lesion" if lesion_px >= int(self.min_lesion_px) else None


def check_selection(where: str, value: Any, example: str) -> None:
    """Raise unless ``value`` (``labels`` or ``series`` of an extraction block) is None or names at
    least one item: an empty list would select nothing and leave the split empty."""
    if value is not None and (not isinstance(value, (list, tuple)) or not value
                              or not all(isinstance(v, str) and v for v in value)):
        shown = list(value) if isinstance(value, (list, tuple)) else repr(value)
        raise ValueError(f"{where} must be a non-empty list of names (e.g. [{example}]) or null for all, got {shown}.")


@dataclass(frozen=True)
class SliceConfig:
    """``params:extraction.slices``."""

    planes: tuple[str, ...] = ("axial", "coronal", "sagittal")
    keep_every: Mapping[str, int] = field(default_factory=lambda: {"axial": 1, "coronal": 1, "sagittal": 1})
    min_foreground_fraction: float = 0.1
    size_px: int = 64
    labels: tuple[str, ...] | None = None
    series: tuple[str, ...] | None = None
    classes: str = CLASS_BY_PLANE
    finding: FindingConfig = field(default_factory=FindingConfig)

    def __post_init__(self) -> None:
        if self.classes not in (CLASS_BY_PLANE, CLASS_BY_FINDING):
            raise ValueError(
                f"extraction.slices.classes must be {CLASS_BY_PLANE!r} (class = imaging plane) or "
                f"{CLASS_BY_FINDING!r} (normal / lesion from the lesion mask), got {self.classes!r}.")
        unknown = sorted(set(self.planes) - set(PLANES))
        if unknown or not self.planes:
            raise ValueError(f"extraction.slices.planes has unknown plane(s) {unknown}; valid: {list(PLANES)}.")
        missing = sorted(set(self.planes) - set(self.keep_every))
        if missing:
            raise ValueError(f"extraction.slices.keep_every has no entry for plane(s) {missing}.")
        if any(int(v) < 1 for v in self.keep_every.values()):
            raise ValueError(f"extraction.slices.keep_every values must be >= 1, got {dict(self.keep_every)}.")
        if not 0.0 <= self.min_foreground_fraction <= 1.0:
            raise ValueError(
                f"extraction.slices.min_foreground_fraction must be in [0, 1], got {self.min_foreground_fraction}."
            )
        if self.size_px < 8:
            raise ValueError(f"extraction.slices.size_px must be at least 8, got {self.size_px}.")
        check_selection("extraction.slices.labels", self.labels, "lesion")
        check_selection("extraction.slices.series", self.series, "FLAIR")

    def class_names(self) -> list[str]:
        """Class names by class id: the planes, or the finding's normal and lesion names."""
        if self.classes == CLASS_BY_FINDING:
            return [self.finding.class_names["normal"], self.finding.class_names["lesion"]]
        return list(self.planes)


@dataclass(frozen=True)
class PatchConfig:
    """``params:extraction.patches``."""

    patch: Mapping[str, Any]
    class_names: Mapping[str, str] = field(default_factory=lambda: {"structure": "structure", "normal": "normal"})
    seed: int = 0
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if set(self.class_names) != {"structure", "normal"}:
            raise ValueError(
                f"extraction.patches.class_names needs keys 'structure' and 'normal', got {sorted(self.class_names)}."
            )
        check_selection("extraction.patches.labels", self.labels, "normal")


def _wanted(row: Any, labels: tuple[str, ...] | None) -> bool:
    return labels is None or row.label in labels


def row_series(row: Any) -> str:
    """A manifest row's series name ("" when ingestion recognised none, or the manifest predates it)."""
    value = getattr(row, "series", "")
    return value if isinstance(value, str) else ""


def selected_volumes(manifest: pd.DataFrame, labels: tuple[str, ...] | None, series: tuple[str, ...] | None,
                     where: str) -> list[Any]:
    """The manifest's volume rows with one of ``labels`` and of the ``series`` (None: any).

    A volume's series (T1w, FLAIR, ...) is what ``ingestion.series`` recognised in its DICOM
    description or file name. Mixing series mixes contrasts (a lesion dark in T1w is bright in
    FLAIR), so a generator learns an average of them unless one is chosen.

    Raises:
        ValueError: ``series`` is set and no volume is of one of them; the message lists the
            series the volumes have.
    """
    rows = [r for r in manifest.itertuples() if r.kind == "volume"]
    if series is not None:
        chosen = [r for r in rows if row_series(r) in series]
        if rows and not chosen:
            found = sorted({row_series(r) for r in rows})
            raise ValueError(
                f"{where}.series={list(series)} matches none of the {len(rows)} volumes; their series are {found} "
                f"('' = not recognised: ingestion.series names a series from words of its DICOM Series "
                f"Description or file name, or the labels table's series column). Set {where}.series to some of "
                f"them, or null for all.")
        if len(chosen) < len(rows):
            logger.info("%s.series=%s: %d of %d volumes kept (%s)", where, list(series), len(chosen), len(rows),
                        dict(Counter(row_series(r) for r in rows)))
        rows = chosen
    return [r for r in rows if _wanted(r, labels)]


def _region(array: np.ndarray, split_row: Mapping[str, Any]) -> np.ndarray:
    """The part of ``(C, ...)`` ``array`` that the split row gives its split."""
    if split_row["strategy"] == "group":
        return array
    axis = int(split_row["axis"]) + 1
    index = [slice(None)] * array.ndim
    index[axis] = slice(int(split_row["start"]), int(split_row["stop"]))
    return array[tuple(index)]


def _rows_for_plane(item_rows: list[dict[str, Any]], plane: str) -> list[dict[str, Any]]:
    """The split rows that govern ``plane``'s slices of one item.

    Group rows and single-axis slabs govern every plane; with slabs along several axes
    (``slab_axis: all``) a plane uses the slabs along its own axis, so its slices are whole.
    """
    own_axis = [r for r in item_rows if r["strategy"] == "slab" and int(r["axis"]) == PLANES[plane]]
    axes = {int(r["axis"]) for r in item_rows if r["strategy"] == "slab"}
    return own_axis if len(axes) > 1 else item_rows


def _stack(arrays: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.stack(arrays).astype(dtype) if arrays else np.zeros((0, *shape), dtype=dtype)


def extract_slices(
    images_by_item: Mapping[str, ArrayLike],
    masks_by_item: Mapping[str, ArrayLike],
    foreground_by_item: Mapping[str, ArrayLike],
    manifest: pd.DataFrame,
    split_table: pd.DataFrame,
    config: SliceConfig,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """2D slices of every volume along the configured planes, labelled by plane or by finding.

    ``classes: plane`` labels each slice with its plane; ``classes: finding`` labels it
    ``normal`` or ``lesion`` from the volume's lesion mask (`FindingConfig`), so that the
    classes are what users look for, not how the volume was cut.

    ``keep_every`` per plane sets the class mix (the sample keeps fewer sagittal slices,
    a deliberate minority class for rebalancing to fill). Slices whose foreground fraction
    is below ``min_foreground_fraction`` are skipped. Each slice is padded to a square
    (with -1, the background value) and resized to ``size_px``.

    Args:
        images_by_item, masks_by_item, foreground_by_item: ``(C, X, Y, Z)`` arrays by item id
            (masks are read only for items with ``has_mask``).
        manifest: the preprocessed manifest (``item_id``, ``patient_key``, ``kind``, ``label``,
            ``has_mask``); only ``kind == "volume"`` rows are sliced.
        split_table: the split rows of every item (``synthmed.core.splits``).
        config: the slicing settings.

    Returns:
        ``({"images", "masks", "labels"}, manifest)`` as described in the module docstring.
    """
    check_no_leakage(split_table)
    by_finding = config.classes == CLASS_BY_FINDING
    class_id = {name: i for i, name in enumerate(config.class_names())}
    images, masks, labels, rows = [], [], [], []
    volumes = selected_volumes(manifest, config.labels, config.series, "extraction.slices")
    if by_finding:
        unmasked = [r.item_id for r in volumes if not r.has_mask]
        if unmasked:
            logger.warning("extraction.slices.classes=finding: %d volume(s) without a lesion mask left out "
                           "(no known finding), e.g. %s", len(unmasked), unmasked[0])
        volumes = [r for r in volumes if r.has_mask]
    slivers = 0
    for item in tqdm(volumes, desc="slicing", unit="volume", disable=None):
        volume = np.asarray(images_by_item[item.item_id])
        fg_volume = np.asarray(foreground_by_item[item.item_id])
        mask_volume = np.asarray(masks_by_item[item.item_id]) if item.has_mask else np.zeros_like(fg_volume)
        item_rows = split_table[split_table["item_id"] == item.item_id].to_dict("records")
        for plane in config.planes:
            for split_row in _rows_for_plane(item_rows, plane):
                region, fg_region, mask_region = (_region(a, split_row) for a in (volume, fg_volume, mask_volume))
                offset = int(split_row["start"]) if split_row["strategy"] == "slab" else 0
                for index in slice_indices(0, plane_length(region.shape, plane), int(config.keep_every[plane])):
                    fraction = foreground_fraction(volume_slice(fg_region, plane, index))
                    if fraction < config.min_foreground_fraction:
                        continue
                    mask_slice = volume_slice(mask_region, plane, index)
                    label = plane
                    if by_finding:
                        finding = config.finding.slice_class(mask_slice[0])
                        if finding is None:
                            slivers += 1
                            continue
                        label = config.finding.class_names[finding]
                    images.append(to_square(volume_slice(region, plane, index), config.size_px, fill=-1.0, order=1))
                    masks.append(to_square(mask_slice, config.size_px, fill=0, order=0))
                    labels.append(class_id[label])
                    along_slab = PLANES[plane] == int(split_row["axis"])
                    rows.append((len(rows), item.item_id, item.patient_key, split_row["split"], plane,
                                 index + offset if along_slab else index, label, class_id[label], round(fraction, 4),
                                 row_series(item)))
    size = (1, config.size_px, config.size_px)
    arrays = {
        "images": np.clip(_stack(images, size, np.float32), -1.0, 1.0),
        "masks": _stack(masks, size, np.uint8),
        "labels": np.asarray(labels, dtype=np.int64),
    }
    table = pd.DataFrame(rows, columns=SLICE_COLUMNS)
    if slivers:
        logger.info("Left out %d slice(s) with fewer than %d lesion pixels (neither normal nor lesion)", slivers,
                    config.finding.min_lesion_px)
    logger.info("Extracted %d slices: %s", len(table), dict(Counter(zip(table["split"], table["label"]))))
    return arrays, table


def extract_patches(
    images_by_item: Mapping[str, ArrayLike],
    masks_by_item: Mapping[str, ArrayLike],
    foreground_by_item: Mapping[str, ArrayLike],
    manifest: pd.DataFrame,
    split_table: pd.DataFrame,
    config: PatchConfig,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Patches around mask structures and from normal tissue of every masked 2D image.

    Candidates lie on a ``stride_px`` grid inside the rows of each split; the class of a
    candidate follows its mask fraction (``synthmed.imaging.slicing.select_patches``).
    Patches are drawn with a generator seeded from ``seed``, the item and the split.

    Args:
        images_by_item, masks_by_item, foreground_by_item: ``(C, H, W)`` arrays by item id.
        manifest: the preprocessed manifest; only ``kind == "image2d"`` rows with a mask are used.
        split_table: the split rows of every item (``synthmed.core.splits``).
        config: the patch settings.

    Returns:
        ``({"images", "masks", "labels"}, manifest)``; class 0 is ``class_names.structure``.
    """
    spec = PatchSpec.from_params(config.patch)
    check_no_leakage(split_table)
    classes = ("structure", "normal")
    images, masks, labels, rows = [], [], [], []
    channels = set()
    items = [r for r in manifest.itertuples()
             if r.kind == "image2d" and r.has_mask and _wanted(r, config.labels)]
    for item in tqdm(items, desc="patching", unit="image", disable=None):
        image = np.asarray(images_by_item[item.item_id])
        mask = np.asarray(masks_by_item[item.item_id])
        foreground = np.asarray(foreground_by_item[item.item_id])
        channels.add(image.shape[0])
        for split_row in split_table[split_table["item_id"] == item.item_id].to_dict("records"):
            if split_row["strategy"] == "slab" and int(split_row["axis"]) != 0:
                raise ValueError(
                    f"Patches need image slabs along rows (preprocessing.split.slab_axis.image2d = 0), "
                    f"got axis {split_row['axis']}."
                )
            row_range = (int(split_row["start"]), int(split_row["stop"])) if split_row["strategy"] == "slab" else None
            rng = np.random.default_rng([config.seed, int(item.item_id[:8], 16), SPLITS.index(split_row["split"])])
            for row, col, kind in select_patches(mask[0] > 0, foreground[0] > 0, spec, rng, row_range):
                patch_mask = crop_patch(mask, row, col, spec.patch_px)
                images.append(crop_patch(image, row, col, spec.patch_px))
                masks.append(patch_mask)
                labels.append(classes.index(kind))
                rows.append((len(rows), item.item_id, item.patient_key, split_row["split"], row, col,
                             config.class_names[kind], classes.index(kind), round(float((patch_mask > 0).mean()), 4)))
    if len(channels) > 1:
        raise ValueError(
            f"Patch source images have different channel counts {sorted(channels)}; "
            f"filter them with extraction.patches.labels."
        )
    n_channels = channels.pop() if channels else 1
    arrays = {
        "images": _stack(images, (n_channels, spec.patch_px, spec.patch_px), np.float32),
        "masks": _stack(masks, (1, spec.patch_px, spec.patch_px), np.uint8),
        "labels": np.asarray(labels, dtype=np.int64),
    }
    table = pd.DataFrame(rows, columns=PATCH_COLUMNS)
    logger.info("Extracted %d patches: %s", len(table), dict(Counter(zip(table["split"], table["label"]))))
    return arrays, table
