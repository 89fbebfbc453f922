"""Fixed-size 3D sub-volumes with their label maps and lesion masks, for 3D generators.

One item (a preprocessed volume ``(C, X, Y, Z)`` and its label map, tissue 1..3 and lesion
4 in the test cohort) gives:

- one crop centred on the brain (the centre of the bounding box of every labelled voxel);
- one crop centred on each lesion (the centre of a connected lesion component's bounding
  box; the largest ``max_lesions_per_item`` lesions first);

each ``size_vox`` voxels after resampling to ``spacing_mm`` (image linear, labels nearest),
padded where it reaches past the volume (image with ``fill``, the background value of
preprocessed images; labels with 0). Outputs, ``(N, C, D, H, W)`` with D, H, W the item's
axes 0, 1, 2 (no reorientation):

- ``images``: float32, the item's channels;
- ``label_maps``: uint8 ``(N, 1, D, H, W)``, the label map as it is;
- ``lesion_masks``: uint8 ``(N, 1, D, H, W)``, 1 where the label map holds a lesion label;

and one provenance row per crop: item, patient, split, crop kind, lesion number, the crop's
first voxel in the resampled grid (negative where the crop starts before the volume), its
offset in mm from the item's first voxel centre, the achieved spacing, the lesion voxels
inside and the share of the brain inside the crop (below 1: the crop cuts the brain; choose
a coarser spacing or a larger size).

Crops are cut inside the region that the split table gives each split (a slab split cuts
the volume first, so a crop never mixes two splits' voxels; slabs along several axes cross,
and are refused); the ``extraction`` pipeline's
``volumes`` mode calls `extract_volumes`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from synthmed.core.lazy import lazy_import
from synthmed.core.manifest import parse_spacing
from synthmed.core.splits import check_no_leakage
from synthmed.imaging.extraction import _region, check_selection, selected_volumes
from synthmed.imaging.geometry import resample_to_spacing

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
ndimage = lazy_import("scipy.ndimage")

logger = logging.getLogger(__name__)

CROP_BRAIN = "brain"
CROP_LESION = "lesion"
CROP_KINDS = (CROP_BRAIN, CROP_LESION)
VOLUME_COLUMNS = [
    "index", "item_id", "patient_key", "split", "crop", "lesion_number",
    "origin_d", "origin_h", "origin_w", "offset_mm_d", "offset_mm_h", "offset_mm_w",
    "spacing_mm_d", "spacing_mm_h", "spacing_mm_w", "lesion_voxels", "brain_fraction",
]


@dataclass(frozen=True)
class VolumeConfig:
    """``params:extraction.volumes``: fixed-size sub-volumes for 3D generators (off by default).

    Args:
        enabled: write the volume store (the 2D slices and patches are written either way).
        size_vox: crop size ``(D, H, W)`` in voxels at ``spacing_mm``.
        spacing_mm: isotropic voxel size the items are resampled to before cropping.
        crops: which crops to cut, from ``brain`` and ``lesion``.
        lesion_labels: label-map values that mark a lesion (the cohort's 4).
        max_lesions_per_item: lesion crops per item, largest lesions first.
        fill: image value where a crop reaches past the volume (preprocessed background).
        labels: only items with these class labels; None = every item with a label map.
        series: only items of these series (``ingestion.series``, e.g. FLAIR); None = all.
    """

    enabled: bool = False
    size_vox: tuple[int, int, int] = (32, 32, 32)
    spacing_mm: float = 6.0
    crops: tuple[str, ...] = CROP_KINDS
    lesion_labels: tuple[int, ...] = (4,)
    max_lesions_per_item: int = 3
    fill: float = -1.0
    labels: tuple[str, ...] | None = None
    series: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.size_vox) != 3 or any(int(n) < 4 for n in self.size_vox):
            raise ValueError(f"extraction.volumes.size_vox must be 3 sizes of at least 4 voxels, got "
                             f"{list(self.size_vox)}.")
        if not float(self.spacing_mm) > 0:
            raise ValueError(f"extraction.volumes.spacing_mm must be positive, got {self.spacing_mm}.")
        unknown = sorted(set(self.crops) - set(CROP_KINDS))
        if unknown or not self.crops:
            raise ValueError(f"extraction.volumes.crops has unknown kind(s) {unknown} or is empty; valid: "
                             f"{list(CROP_KINDS)}.")
        if not self.lesion_labels or any(int(v) <= 0 for v in self.lesion_labels):
            raise ValueError(f"extraction.volumes.lesion_labels must list label values > 0, got "
                             f"{list(self.lesion_labels)}.")
        if int(self.max_lesions_per_item) < 1:
            raise ValueError(f"extraction.volumes.max_lesions_per_item must be at least 1, got "
                             f"{self.max_lesions_per_item}.")
        check_selection("extraction.volumes.labels", self.labels, "lesion")
        check_selection("extraction.volumes.series", self.series, "FLAIR")


@dataclass(frozen=True)
class Crop:
    """Where one crop lies in the resampled grid and why it was cut."""

    kind: str
    lesion_number: int        # 1.. by decreasing lesion size; 0 for the brain crop
    origin: tuple[int, int, int]


def single_volume(volume: ArrayLike, what: str) -> np.ndarray:
    """``(D, H, W)`` from ``(D, H, W)`` or ``(1, D, H, W)``; ``what`` names it in the error."""
    array = np.asarray(volume)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"Expected {what} with shape (D, H, W) or (1, D, H, W), got {np.asarray(volume).shape}.")
    return array


def crop_at(array: np.ndarray, origin: Sequence[int], size: Sequence[int], fill: float) -> np.ndarray:
    """``array[:, o:o+s, ...]`` for ``(C, X, Y, Z)``, padded with ``fill`` where it reaches past the volume."""
    out = np.full((array.shape[0], *size), fill, dtype=array.dtype)
    source, target = [], []
    for o, s, n in zip(origin, size, array.shape[1:]):
        low, high = max(o, 0), min(o + s, n)
        if high <= low:
            return out  # entirely outside along this axis
        source.append(slice(low, high))
        target.append(slice(low - o, high - o))
    out[(slice(None), *target)] = array[(slice(None), *source)]
    return out


def _centred(low: np.ndarray, high: np.ndarray, size: np.ndarray) -> tuple[int, int, int]:
    """Origin of a ``size`` crop centred on the box ``[low, high)`` (whole voxels, the lower centre on a tie)."""
    centre = (low + high - 1) // 2
    return tuple(int(v) for v in centre - size // 2)


def plan_crops(label_map: np.ndarray, config: VolumeConfig) -> list[Crop]:
    """The crops of one resampled ``(X, Y, Z)`` label map: the brain, then each lesion (largest first)."""
    size = np.array(config.size_vox)
    crops: list[Crop] = []
    brain = np.argwhere(label_map > 0)
    if CROP_BRAIN in config.crops and len(brain):
        crops.append(Crop(CROP_BRAIN, 0, _centred(brain.min(axis=0), brain.max(axis=0) + 1, size)))
    if CROP_LESION in config.crops:
        components, n = ndimage.label(np.isin(label_map, config.lesion_labels), structure=np.ones((3, 3, 3)))
        if n:
            sizes = np.bincount(components.ravel())[1:]
            boxes = ndimage.find_objects(components)
            # Largest first; equal sizes keep label order (scan order), so the plan is deterministic.
            order = sorted(range(n), key=lambda k: (-sizes[k], k))[: int(config.max_lesions_per_item)]
            for rank, k in enumerate(order, start=1):
                box = boxes[k]
                low = np.array([s.start for s in box])
                high = np.array([s.stop for s in box])
                crops.append(Crop(CROP_LESION, rank, _centred(low, high, size)))
    return crops


def extract_subvolumes(
    image: ArrayLike, label_map: ArrayLike, spacing_mm: Sequence[float], config: VolumeConfig, *,
    region_start_mm: Sequence[float] = (0.0, 0.0, 0.0),
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The crops of one item (see the module docstring), without the item's identity columns.

    Args:
        image: ``(C, X, Y, Z)`` real array.
        label_map: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` integer labels of the same grid.
        spacing_mm: the item's voxel size, one value per axis.
        config: crop size, spacing, kinds.
        region_start_mm: where ``image``'s first voxel centre lies from the item's first voxel
            centre (a slab of the item), added to each crop's ``offset_mm``.

    Returns:
        ``({"images", "label_maps", "lesion_masks"}, rows)`` with one row per crop.

    Raises:
        ValueError: the image is not ``(C, X, Y, Z)`` or the label map is not on its grid.
    """
    values = np.asarray(image)
    labels = np.asarray(label_map)
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    if values.ndim != 4 or labels.shape != values.shape[1:]:
        raise ValueError(f"extract_subvolumes needs a (C, X, Y, Z) image and an (X, Y, Z) label map of the same "
                         f"grid, got {values.shape} and {np.asarray(label_map).shape}.")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"The label map must hold integer labels, got {labels.dtype}.")
    spacing = tuple(float(s) for s in spacing_mm)
    target = (float(config.spacing_mm),) * 3
    if np.allclose(spacing, target):
        resampled, labels_resampled, achieved = values.astype(np.float32), labels.astype(np.uint8), spacing
    else:
        resampled, achieved = resample_to_spacing(values, spacing, target, order=1)
        labels_resampled = resample_to_spacing(labels[None].astype(np.uint8), spacing, target, order=0)[0][0]
    size = tuple(int(n) for n in config.size_vox)
    brain_total = int((labels_resampled > 0).sum())
    arrays: dict[str, list[np.ndarray]] = {"images": [], "label_maps": [], "lesion_masks": []}
    rows: list[dict[str, Any]] = []
    for crop in plan_crops(labels_resampled, config):
        label_crop = crop_at(labels_resampled[None], crop.origin, size, 0)
        lesion_crop = np.isin(label_crop, config.lesion_labels).astype(np.uint8)
        arrays["images"].append(crop_at(resampled, crop.origin, size, float(config.fill)))
        arrays["label_maps"].append(label_crop)
        arrays["lesion_masks"].append(lesion_crop)
        # skimage's resize keeps the volume's outer edges: new voxel i sits at (i + 1/2) s' - s/2 mm.
        offset = [start + (o + 0.5) * new - 0.5 * old
                  for start, o, new, old in zip(region_start_mm, crop.origin, achieved, spacing)]
        rows.append({
            "crop": crop.kind, "lesion_number": crop.lesion_number,
            **{f"origin_{a}": int(o) for a, o in zip("dhw", crop.origin)},
            **{f"offset_mm_{a}": round(float(v), 4) for a, v in zip("dhw", offset)},
            **{f"spacing_mm_{a}": round(float(v), 6) for a, v in zip("dhw", achieved)},
            "lesion_voxels": int(lesion_crop.sum()),
            "brain_fraction": round(int((label_crop > 0).sum()) / brain_total, 4) if brain_total else 0.0,
        })
    empty = empty_volumes(config, values.shape[0])
    stacked = {name: (np.stack(items).astype(empty[name].dtype) if items else empty[name])
               for name, items in arrays.items()}
    return stacked, rows


def empty_volumes(config: VolumeConfig, n_channels: int = 1) -> dict[str, np.ndarray]:
    """The three arrays with no sub-volume: what a run with volumes disabled, or none found, stores."""
    size = tuple(int(n) for n in config.size_vox)
    return {"images": np.zeros((0, n_channels, *size), np.float32),
            "label_maps": np.zeros((0, 1, *size), np.uint8), "lesion_masks": np.zeros((0, 1, *size), np.uint8)}


def extract_volumes(
    images_by_item: Mapping[str, ArrayLike],
    masks_by_item: Mapping[str, ArrayLike],
    manifest: pd.DataFrame,
    split_table: pd.DataFrame,
    config: VolumeConfig,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Sub-volumes of every volume item with a label map, inside each split's region.

    Args:
        images_by_item, masks_by_item: ``(C, X, Y, Z)`` arrays by item id (the preprocessed stores).
        manifest: the preprocessed manifest (``item_id``, ``patient_key``, ``kind``, ``label``,
            ``has_mask``, ``spacing_mm``); volumes without a label map are left out (no brain or
            lesion to centre on), with a warning.
        split_table: the split rows of every item (``synthmed.core.splits``).
        config: `VolumeConfig`.

    Returns:
        ``({"images", "label_maps", "lesion_masks"}, table)``: ``(N, C, D, H, W)`` arrays and
        one row per crop (``VOLUME_COLUMNS``).
    """
    check_no_leakage(split_table)
    volumes = selected_volumes(manifest, config.labels, config.series, "extraction.volumes")
    unmasked = [r.item_id for r in volumes if not r.has_mask]
    if unmasked:
        logger.warning("extraction.volumes: %d volume(s) without a label map left out, e.g. %s", len(unmasked),
                       unmasked[0])
    parts: dict[str, list[np.ndarray]] = {"images": [], "label_maps": [], "lesion_masks": []}
    rows: list[dict[str, Any]] = []
    channels: set[int] = set()
    for item in (r for r in volumes if r.has_mask):
        image = np.asarray(images_by_item[item.item_id])
        label_map = np.asarray(masks_by_item[item.item_id])
        spacing = parse_spacing(item.spacing_mm)
        channels.add(image.shape[0])
        item_rows = split_table[split_table["item_id"] == item.item_id].to_dict("records")
        axes = {int(r["axis"]) for r in item_rows if r["strategy"] == "slab"}
        if len(axes) > 1:
            # Slabs along two axes cross: a 3D crop of one would hold voxels of another split.
            raise ValueError(f"Item {item.item_id} is split into slabs along axes {sorted(axes)}; sub-volumes need "
                             "slabs along one axis (preprocessing.split.slab_axis) or a group split.")
        for split_row in item_rows:
            region_start = [0.0, 0.0, 0.0]
            if split_row["strategy"] == "slab":
                axis = int(split_row["axis"])
                region_start[axis] = int(split_row["start"]) * spacing[axis]
            arrays, item_rows = extract_subvolumes(_region(image, split_row), _region(label_map, split_row), spacing,
                                                   config, region_start_mm=region_start)
            for name, array in arrays.items():
                parts[name].append(array)
            rows += [{"item_id": item.item_id, "patient_key": item.patient_key, "split": split_row["split"], **row}
                     for row in item_rows]
    if len(channels) > 1:
        raise ValueError(f"Volume items have different channel counts {sorted(channels)}; filter them with "
                         "extraction.volumes.labels.")
    empty = empty_volumes(config, channels.pop() if channels else 1)
    arrays = {name: (np.concatenate(items) if items else empty[name]) for name, items in parts.items()}
    table = pd.DataFrame([{"index": k, **row} for k, row in enumerate(rows)], columns=VOLUME_COLUMNS)
    logger.info("Extracted %d sub-volumes of %s voxels at %g mm: %s", len(table), "x".join(map(str, config.size_vox)),
                config.spacing_mm, dict(Counter(zip(table["split"], table["crop"]))))
    return arrays, table


def tissue_order(images: ArrayLike, label_maps: ArrayLike, brighter: int, darker: int) -> np.ndarray:
    """Per sub-volume, whether tissue ``brighter`` has a higher mean intensity than tissue ``darker``.

    Tells MR contrasts apart from the image and its label map when the manifest does not record
    the contrast (the test cohort's FLAIR-like volumes have grey matter above white matter, its
    T1w volumes below). A sub-volume without one of the two tissues gives False.

    Args:
        images: ``(N, C, D, H, W)``; the first channel is compared.
        label_maps: ``(N, 1, D, H, W)`` integer labels.
    """
    values, labels = np.asarray(images)[:, 0], np.asarray(label_maps)[:, 0]
    result = np.zeros(len(values), dtype=bool)
    for k, (image, label) in enumerate(zip(values, labels)):
        high, low = image[label == brighter], image[label == darker]
        result[k] = bool(high.size and low.size and float(high.mean()) > float(low.mean()))
    return result
