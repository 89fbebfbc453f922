"""Lesion-centred and normal patches of labelled volumes (``extraction.lesion_patches``).

Axial slices of each preprocessed volume with a label map are resampled to ``pixel_mm`` and cut
into square patches of ``patch_px``:

- **lesion** patches: one per connected component of the lesion labels in an axial slice (at
  least ``min_lesion_px`` pixels), centred on the component's centroid plus a uniform jitter
  of at most ``jitter_px`` on each axis;
- **normal** patches: a random centre on brain tissue (label map > 0) of a random axial slice
  of a patient of the same split, kept only when the patch holds no lesion pixel and at least
  ``min_brain_fraction`` of it is brain; ``normal_per_lesion`` of them per lesion patch of the
  split (drawn patient after patient, so every patient of the split contributes).

Every patch belongs to its patient's split (the split table is by patient: ``group`` rows);
``check_patient_splits`` raises when a patient's patches cross splits or disagree with the
split table. Only volumes of the ``series`` chosen are cut (conf/base: FLAIR; a lesion is bright
there and dark in T1w, so a lesion class of both series holds two opposite looks). Patches are
then normalised one by one (``normalise_patches``): per-patch percentile scaling of the brain
pixels (``low`` -> -1, ``high`` -> 1, clipped), background set to -1. It removes the intensity
scale of each acquisition (the cohort mixes scanners); it does not match histograms across
patients.

The demo's DCGAN learns these patches (``dcgan.run.source: lesion_patches``), and the lesion-patch
study (``synthmed.protocols.lesion_patches``) scores that model on them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.core.manifest import parse_spacing
from synthmed.core.validation import is_int, is_number
from synthmed.imaging.extraction import check_selection, selected_volumes

pd = lazy_import("pandas")
logger = logging.getLogger(__name__)

WHERE = "extraction.lesion_patches"
CLASS_NAMES = ("normal", "lesion")  # class ids 0 and 1
NORMAL, LESION = 0, 1
PATCH_COLUMNS = ["index", "item_id", "patient_key", "split", "slice_index", "row", "col", "label", "class_id",
                 "lesion_px", "brain_fraction"]


@dataclass(frozen=True)
class PatchSampling:
    """``params:extraction.lesion_patches.patches``.

    Args:
        patch_px: side of the square patches.
        pixel_mm: pixel size the axial slices are resampled to before cutting (field of view
            ``patch_px x pixel_mm`` mm).
        lesion_labels: label-map values of a lesion.
        min_lesion_px: the smallest lesion component (pixels at ``pixel_mm``) that gets a patch.
        jitter_px: the patch centre is the component's centroid moved by up to this on each axis.
        slice_step: every n-th axial slice is used (neighbouring slices are nearly identical).
        normal_per_lesion: normal patches per lesion patch, per split.
        min_brain_fraction: share of a normal patch that must be brain (label map > 0).
        max_tries: random centres tried per normal patch before giving up on it.
        seed: jitter and normal patch draws.
        series: only volumes of these series (``ingestion.series``: T1w, FLAIR, ...); None = all.
            Mixing series mixes contrasts: a lesion bright in FLAIR is dark in T1w, so the lesion
            class holds two appearances and the per-patch normalisation does not join them.
    """

    patch_px: int = 32
    pixel_mm: float = 2.0
    lesion_labels: tuple[int, ...] = (4,)
    min_lesion_px: int = 4
    jitter_px: int = 2
    slice_step: int = 1
    normal_per_lesion: float = 2.0
    min_brain_fraction: float = 0.75
    max_tries: int = 200
    seed: int = 0
    series: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        where = f"{WHERE}.patches"
        if isinstance(self.series, list):  # YAML lists
            object.__setattr__(self, "series", tuple(self.series))
        check_selection(f"{where}.series", self.series, "FLAIR")
        if not is_int(self.patch_px) or self.patch_px < 16 or self.patch_px & (self.patch_px - 1):
            raise ValueError(f"{where}.patch_px must be a power of two >= 16 (the dcgan and classifier sizes), "
                             f"got {self.patch_px!r}.")
        if not is_number(self.pixel_mm) or self.pixel_mm <= 0:
            raise ValueError(f"{where}.pixel_mm must be a number > 0, got {self.pixel_mm!r}.")
        if not self.lesion_labels or not all(is_int(v) and v > 0 for v in self.lesion_labels):
            raise ValueError(f"{where}.lesion_labels must be a non-empty list of label values > 0, "
                             f"got {list(self.lesion_labels)!r}.")
        for key, low in (("min_lesion_px", 1), ("jitter_px", 0), ("slice_step", 1), ("max_tries", 1)):
            value = getattr(self, key)
            if not is_int(value) or value < low:
                raise ValueError(f"{where}.{key} must be an integer >= {low}, got {value!r}.")
        if 2 * self.jitter_px >= self.patch_px:
            raise ValueError(f"{where}.jitter_px={self.jitter_px} moves the lesion out of a {self.patch_px} px patch; "
                             f"expected < {self.patch_px // 2}.")
        if not is_number(self.normal_per_lesion) or self.normal_per_lesion <= 0:
            raise ValueError(f"{where}.normal_per_lesion must be a number > 0, got {self.normal_per_lesion!r}.")
        if not is_number(self.min_brain_fraction) or not 0.0 <= self.min_brain_fraction <= 1.0:
            raise ValueError(f"{where}.min_brain_fraction must be in [0, 1], got {self.min_brain_fraction!r}.")


@dataclass(frozen=True)
class Normalisation:
    """``params:extraction.lesion_patches.normalisation``: ``percentile`` (per-patch scaling of the brain
    pixels' ``low``-``high`` percentiles to [-1, 1]) or ``none`` (the preprocessed values)."""

    method: str = "percentile"
    low: float = 1.0
    high: float = 99.0

    def __post_init__(self) -> None:
        if self.method not in ("percentile", "none"):
            raise ValueError(f"{WHERE}.normalisation.method must be percentile or none, got {self.method!r}.")
        if not (is_number(self.low) and is_number(self.high) and 0.0 <= self.low < self.high <= 100.0):
            raise ValueError(f"{WHERE}.normalisation needs 0 <= low < high <= 100, got low={self.low!r}, "
                             f"high={self.high!r}.")


# ----------------------------------------------------------------------------- patches


def _axial(volume: np.ndarray, z: int, zoom: tuple[float, float], order: int) -> np.ndarray:
    """Axial slice ``z`` of a ``(C, X, Y, Z)`` volume as ``(H, W)`` (first channel), resampled by ``zoom``."""
    from scipy.ndimage import zoom as resample

    from synthmed.imaging.slicing import volume_slice

    plane = volume_slice(volume, "axial", z)[0]
    if zoom == (1.0, 1.0):
        return plane
    return resample(plane.astype(np.float32) if order else plane, zoom, order=order, mode="nearest")


def _cut(array: np.ndarray, row: int, col: int, size: int, fill: float) -> np.ndarray:
    """The ``size`` x ``size`` window of ``(H, W)`` ``array`` centred on ``(row, col)``, padded with ``fill``."""
    padded = np.pad(array, size, mode="constant", constant_values=fill)
    top, left = row - size // 2 + size, col - size // 2 + size
    return padded[top:top + size, left:left + size]


def _group_splits(split_table: pd.DataFrame) -> dict[str, str]:
    """item id -> split, refusing tables that are not split by patient."""
    from synthmed.core.splits import check_no_leakage

    check_no_leakage(split_table)
    slabs = split_table[split_table["strategy"] != "group"]
    if len(slabs):
        raise ValueError(f"{WHERE} cuts patches per patient, so it needs a split by patient (strategy group); the "
                         f"split table has {len(slabs)} {sorted(set(slabs['strategy']))} row(s), e.g. item "
                         f"{slabs['item_id'].iloc[0]}: set preprocessing.split.strategy: group.")
    return dict(zip(split_table["item_id"], split_table["split"]))


def cut_patches(images_by_item: Mapping[str, np.ndarray], masks_by_item: Mapping[str, np.ndarray],
                manifest: pd.DataFrame, split_table: pd.DataFrame,
                config: PatchSampling) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Lesion-centred and normal patches of every labelled volume, inside each patient's split.

    Args:
        images_by_item, masks_by_item: ``(C, X, Y, Z)`` preprocessed volumes (float in [-1, 1]) and
            their label maps (0 background, > 0 tissue, ``lesion_labels`` lesion) by item id.
        manifest: the preprocessed manifest (``item_id``, ``patient_key``, ``kind``, ``has_mask``,
            ``spacing_mm``, ``series``); volumes without a label map, and with ``config.series`` those of
            other series, are left out.
        split_table: the split rows (``synthmed.core.splits``), by patient.

    Returns:
        ``({"images" (N, 1, P, P) float32 (not normalised), "masks" (N, 1, P, P) uint8 lesion mask,
        "brain" (N, 1, P, P) uint8, "labels" (N,) int64}, manifest)`` with ``PATCH_COLUMNS``.
    """
    from scipy import ndimage

    splits = _group_splits(split_table)
    rng = np.random.default_rng(config.seed)
    lesion_values = np.asarray(config.lesion_labels)
    size = config.patch_px
    volumes = selected_volumes(manifest, None, config.series, f"{WHERE}.patches")
    items = [r for r in volumes if r.has_mask and r.item_id in splits]
    if not items:
        chosen = f" of the series {list(config.series)} ({WHERE}.patches.series)" if config.series else ""
        raise ValueError(f"{WHERE}: no volume{chosen} with a label map in the preprocessed manifest (of "
                         f"{len(manifest)} items); for a cohort without lesion masks set {WHERE}.enabled: false.")
    slices: dict[str, list[int]] = {}  # axial slices with brain, by item
    zooms: dict[str, tuple[float, float]] = {}
    patches: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []
    for item in items:
        spacing = parse_spacing(item.spacing_mm)
        zoom = (spacing[1] / config.pixel_mm, spacing[0] / config.pixel_mm)  # axial (C, Y, X)
        zoom = zooms[item.item_id] = tuple(1.0 if abs(z - 1.0) < 1e-6 else z for z in zoom)
        image, labels = np.asarray(images_by_item[item.item_id]), np.asarray(masks_by_item[item.item_id])
        kept = []
        for z in range(0, image.shape[-1], config.slice_step):
            label_slice = _axial(labels, z, zoom, order=0)
            if not (label_slice > 0).any():
                continue
            kept.append(z)
            lesion = np.isin(label_slice, lesion_values)
            if not lesion.any():
                continue
            image_slice = _axial(image, z, zoom, order=1)
            components, count = ndimage.label(lesion)
            for k in range(1, count + 1):
                pixels = int((components == k).sum())
                if pixels < config.min_lesion_px:
                    continue
                centre = np.asarray(ndimage.center_of_mass(components == k))
                row, col = (np.round(centre).astype(int)
                            + rng.integers(-config.jitter_px, config.jitter_px + 1, size=2))
                patches.append((_cut(image_slice, row, col, size, -1.0), _cut(label_slice, row, col, size, 0),
                                {"item_id": item.item_id, "patient_key": item.patient_key,
                                 "split": splits[item.item_id], "slice_index": z, "row": int(row), "col": int(col),
                                 "label": CLASS_NAMES[LESION], "class_id": LESION}))
        slices[item.item_id] = kept
    lesion_per_split = pd.Series([p[2]["split"] for p in patches], dtype=object).value_counts()
    for split, count in lesion_per_split.items():
        wanted = int(round(config.normal_per_lesion * count))
        members = [r for r in items if splits[r.item_id] == split and slices[r.item_id]]
        drawn = 0
        for k in range(wanted):
            item = members[k % len(members)]
            volumes = (np.asarray(images_by_item[item.item_id]), np.asarray(masks_by_item[item.item_id]))
            found = _normal_patch(volumes, slices[item.item_id], zooms[item.item_id], config, lesion_values, rng)
            if found is None:
                continue
            z, row, col, image_patch, label_patch = found
            drawn += 1
            patches.append((image_patch, label_patch,
                            {"item_id": item.item_id, "patient_key": item.patient_key, "split": split,
                             "slice_index": z, "row": row, "col": col, "label": CLASS_NAMES[NORMAL],
                             "class_id": NORMAL}))
        if drawn < wanted:
            logger.warning("%s: %d of %d normal patches of the %s split found (no lesion, >= %.0f%% brain within "
                           "%d tries each)", WHERE, drawn, wanted, split, 100 * config.min_brain_fraction,
                           config.max_tries)
    if not patches:
        raise ValueError(f"{WHERE}: no lesion component of >= {config.min_lesion_px} px found in {len(items)} volumes "
                         f"(lesion_labels {list(config.lesion_labels)}, min_lesion_px {config.min_lesion_px}).")
    rows = []
    for index, (_, label_patch, row) in enumerate(patches):
        rows.append({"index": index, **row, "lesion_px": int(np.isin(label_patch, lesion_values).sum()),
                     "brain_fraction": round(float((label_patch > 0).mean()), 4)})
    table = pd.DataFrame(rows, columns=PATCH_COLUMNS)
    arrays = {
        "images": np.stack([p[0] for p in patches])[:, None].astype(np.float32),
        "masks": np.stack([np.isin(p[1], lesion_values) for p in patches])[:, None].astype(np.uint8),
        "brain": np.stack([p[1] > 0 for p in patches])[:, None].astype(np.uint8),
        "labels": table["class_id"].to_numpy(dtype=np.int64),
    }
    check_patient_splits(table, split_table)
    logger.info("%s: %d patches of %d px at %g mm: %s", WHERE, len(table), size, config.pixel_mm,
                {f"{s}/{c}": int(n) for (s, c), n in table.groupby(["split", "label"]).size().items()})
    return arrays, table


def _normal_patch(volumes: tuple[np.ndarray, np.ndarray], slices: Sequence[int], zoom: tuple[float, float],
                  config: PatchSampling, lesion_values: np.ndarray, rng: np.random.Generator):
    """``(z, row, col, image patch, label patch)`` of a lesion-free, mostly-brain patch, or None."""
    size = config.patch_px
    for _ in range(config.max_tries):
        z = int(slices[int(rng.integers(len(slices)))])
        label_slice = _axial(volumes[1], z, zoom, order=0)
        brain = np.argwhere(label_slice > 0)
        row, col = (int(v) for v in brain[int(rng.integers(len(brain)))])
        label_patch = _cut(label_slice, row, col, size, 0)
        if np.isin(label_patch, lesion_values).any() or (label_patch > 0).mean() < config.min_brain_fraction:
            continue
        return z, row, col, _cut(_axial(volumes[0], z, zoom, order=1), row, col, size, -1.0), label_patch
    return None


def check_patient_splits(table: pd.DataFrame, split_table: pd.DataFrame | None = None) -> None:
    """Raise ``ValueError`` when a patient's patches lie in more than one split, or in another split
    than the split table gives the patient."""
    spread = table.groupby("patient_key")["split"].nunique()
    crossing = sorted(spread[spread > 1].index)
    if crossing:
        where = table[table["patient_key"].isin(crossing)].groupby("patient_key")["split"].unique()
        raise ValueError(f"{WHERE}: the patches of patient(s) {crossing} lie in several splits "
                         f"({ {k: sorted(v) for k, v in where.items()} }); a patient's patches must stay in one split.")
    if split_table is not None:
        expected = dict(zip(split_table["item_id"], split_table["split"]))
        wrong = table[table["item_id"].map(expected) != table["split"]]
        if len(wrong):
            raise ValueError(f"{WHERE}: {len(wrong)} patch(es) are not in their item's split, e.g. item "
                             f"{wrong['item_id'].iloc[0]} in {wrong['split'].iloc[0]!r}, expected "
                             f"{expected.get(wrong['item_id'].iloc[0])!r} (split table).")


def normalise_patches(images: np.ndarray, brain: np.ndarray, config: Normalisation) -> np.ndarray:
    """Per-patch percentile scaling: ``(N, 1, P, P)`` float32 in [-1, 1].

    The brain pixels' ``low`` and ``high`` percentiles go to -1 and 1 (clipped); background
    pixels become -1. A patch with fewer than 2 brain pixels, or a flat one, keeps its values.
    """
    if images.ndim != 4 or brain.shape != images.shape:
        raise ValueError(f"Expected images and brain masks of one shape (N, 1, P, P), got {images.shape} and "
                         f"{brain.shape}.")
    out = np.clip(images.astype(np.float32), -1.0, 1.0)
    if config.method == "none":
        return out
    for k in range(len(out)):
        inside = brain[k] > 0
        values = out[k][inside]
        if values.size < 2:
            continue
        low, high = np.percentile(values, [config.low, config.high])
        if high - low <= 1e-6:
            continue
        scaled = np.clip((out[k] - low) / (high - low) * 2.0 - 1.0, -1.0, 1.0)
        out[k] = np.where(inside, scaled, -1.0)
    return out


@dataclass(frozen=True)
class LesionPatchExtraction:
    """``params:extraction.lesion_patches``.

    Args:
        enabled: cut the patches; false writes an empty store and manifest (a cohort without
            lesion masks, such as conf/template's one template brain).
        patches: ``PatchSampling`` keys.
        normalisation: ``Normalisation`` keys.
    """

    enabled: bool = True
    patches: PatchSampling = field(default_factory=PatchSampling)
    normalisation: Normalisation = field(default_factory=Normalisation)


def empty_patches(patch_px: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The store and manifest of no patch (``enabled: false``), shaped as ``cut_patches``' output."""
    shape = (0, 1, patch_px, patch_px)
    return ({"images": np.zeros(shape, np.float32), "masks": np.zeros(shape, np.uint8),
             "brain": np.zeros(shape, np.uint8), "labels": np.zeros(0, np.int64)},
            pd.DataFrame(columns=PATCH_COLUMNS))
