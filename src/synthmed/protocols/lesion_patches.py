"""The "lesion patches" study (issue 10): DCGAN lesion and normal patches, as in the published figure.

Data: the cohort's preprocessed volumes and label maps (``preprocessed_images`` /
``preprocessed_masks``, one ``(C, X, Y, Z)`` array per item) and the split table. Axial slices
are resampled to ``pixel_mm`` and cut into square patches of ``patch_px``:

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

Model, metrics and rows: the ``dcgan`` family, class-conditional on normal / lesion, trained
with synthmed's trainer; FID (the project's Frechet distance with its real-vs-real floor on the
same N, ``synthmed.protocols.evaluation.fid_sets`` / ``fid_intervals``) in the feature space of
a domain encoder trained on the real training patches; class fidelity (``class_fidelity``: the
share of each class's synthetic patches that encoder assigns to that class, beside its share on
held-out real patches); the downstream classifier
(``synthmed.metrics.utility.evaluate_utility``) in four modes tested on held-out patients.
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
from synthmed.imaging.extraction import selected_volumes
from synthmed.protocols.studies import PublishedRow, StudyRow, check_held_out_splits, check_level, clopper_pearson

pd = lazy_import("pandas")
torch = lazy_import("torch")
logger = logging.getLogger(__name__)

WHERE = "study_lesion_patches"
CLASS_NAMES = ("normal", "lesion")  # class ids 0 and 1
NORMAL, LESION = 0, 1
PATCH_COLUMNS = ["index", "item_id", "patient_key", "split", "slice_index", "row", "col", "label", "class_id",
                 "lesion_px", "brain_fraction"]
# The classifier modes of the study (synthmed.metrics.utility names) and how the table names them.
UTILITY_MODES = {"real": "real", "real+flips": "real+flips", "real+synthetic": "real+GAN",
                 "real+synthetic+flips": "real+GAN+flips"}
FID_METRICS = ("fid",)
UTILITY_METRICS = ("f1_lesion", "auroc", "balanced_accuracy")
UTILITY_LABELS = {"f1_lesion": "F1 (lesion)", "auroc": "AUC", "balanced_accuracy": "balanced accuracy"}


@dataclass(frozen=True)
class PatchSampling:
    """``params:study_lesion_patches.patches``.

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
        if self.series is not None and (not isinstance(self.series, tuple) or not self.series
                                        or not all(isinstance(v, str) and v for v in self.series)):
            raise ValueError(f"{where}.series must be a non-empty list of series names (e.g. [FLAIR]) or null for "
                             f"all, got {list(self.series) if isinstance(self.series, tuple) else self.series!r}.")
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
    """``params:study_lesion_patches.normalisation``: ``percentile`` (per-patch scaling of the brain
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


@dataclass(frozen=True)
class StudyEvaluation:
    """``params:study_lesion_patches.evaluation``.

    Args:
        test_splits: the held-out patients' splits the classifiers are tested on (no model
            selection happens on validation, so it can join the test set).
        synthetic_per_real: synthetic patches per real training patch of each class.
        sample_seed, batch_size: the generator's latents and images per pass.
        encoder: ``synthmed.protocols.encoders.EncoderConfig`` keys (the FID feature network).
        fid_resamples, level, seed: bootstrap of the FID and its floor.
        utility: ``synthmed.metrics.utility.UtilityConfig`` keys (modes: the study's four).
        tsne_perplexity: of the t-SNE map.
        grid_examples: patches per row of the sample grid.
    """

    test_splits: tuple[str, ...] = ("validation", "test")
    synthetic_per_real: float = 1.0
    sample_seed: int = 0
    batch_size: int = 64
    encoder: Mapping[str, Any] = field(default_factory=dict)
    fid_resamples: int = 200
    level: float = 0.95
    seed: int = 0
    utility: Mapping[str, Any] = field(default_factory=dict)
    tsne_perplexity: float = 20.0
    grid_examples: int = 8

    def __post_init__(self) -> None:
        where = f"{WHERE}.evaluation"
        check_held_out_splits(f"{where}.test_splits", self.test_splits)
        if not is_number(self.synthetic_per_real) or self.synthetic_per_real <= 0:
            raise ValueError(f"{where}.synthetic_per_real must be a number > 0, got {self.synthetic_per_real!r}.")
        for key in ("batch_size", "fid_resamples", "grid_examples"):
            if not is_int(getattr(self, key)) or getattr(self, key) < 1:
                raise ValueError(f"{where}.{key} must be an integer >= 1, got {getattr(self, key)!r}.")
        check_level(f"{where}.level", self.level)


@dataclass(frozen=True)
class PublishedFigure:
    """``study_lesion_patches.published``: the figure printed beside ours (a cited constant)."""

    label: str
    fid: float
    citation: str


@dataclass(frozen=True)
class LesionPatchesConfig:
    """``params:study_lesion_patches``.

    Args:
        patches: ``PatchSampling`` keys.
        normalisation: ``Normalisation`` keys.
        checkpoint_root: parent folder of the generator's training checkpoints.
        model, training: the ``dcgan`` family's ``Config`` and ``TrainingConfig`` keys.
        evaluation: ``StudyEvaluation`` keys.
        published: the published figure printed beside ours.
    """

    patches: PatchSampling = field(default_factory=PatchSampling)
    normalisation: Normalisation = field(default_factory=Normalisation)
    checkpoint_root: str = "data/06_models/checkpoints"
    model: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    evaluation: StudyEvaluation = field(default_factory=StudyEvaluation)
    published: PublishedFigure | None = None


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
                         f"{len(manifest)} items); run the cohort's data pipeline (kedro run --pipelines data).")
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


# ----------------------------------------------------------------------------- rows of the tables


def fid_rows(fid: Mapping[str, float], *, model_source: str) -> list[StudyRow]:
    """Our FID row and the real-vs-real floor (``fid_intervals``' keys), same N."""
    n = float(fid["fid_n"])
    return [
        StudyRow("DCGAN lesion patches (ours)", "ours",
                 {"fid": {"mean": fid["fid"], "low": fid["fid_low"], "high": fid["fid_high"], "n": n}}, model_source),
        StudyRow("real vs real lesion patches (floor)", "floor",
                 {"fid": {"mean": fid["fid_floor_halves"], "low": fid["fid_floor_halves_low"],
                          "high": fid["fid_floor_halves_high"], "n": float(fid["fid_floor_halves_n"])}},
                 "two disjoint halves of the real training lesion patches: the FID a perfect generator reaches at "
                 "this N"),
    ]


def published_rows(figure: PublishedFigure | None) -> list[PublishedRow]:
    if figure is None:
        return []
    return [PublishedRow(figure.label, {"fid": figure.fid}, figure.citation)]


def utility_rows(summary: pd.DataFrame, runs: pd.DataFrame, *, n_train: Mapping[str, int]) -> list[StudyRow]:
    """One row per classifier mode: lesion F1 (seed mean, bootstrap interval over the test patches),
    AUC (seed mean, [min, max] over seeds), balanced accuracy (seed mean, bootstrap interval)."""
    rows = []
    for mode, name in UTILITY_MODES.items():
        part = summary[summary["mode"] == mode].set_index("score")
        if part.empty:
            continue
        n_test = float(part["n_test"].iloc[0])
        auroc = runs[(runs["mode"] == mode) & (runs["score"] == "auroc")]["value"]
        summaries = {
            "f1_lesion": {"mean": part.loc["f1.lesion", "mean"], "low": part.loc["f1.lesion", "low"],
                          "high": part.loc["f1.lesion", "high"], "n": n_test},
            "auroc": {"mean": float(auroc.mean()), "low": float(auroc.min()), "high": float(auroc.max()),
                      "n": n_test},
            "balanced_accuracy": {"mean": part.loc["balanced_accuracy", "mean"],
                                  "low": part.loc["balanced_accuracy", "low"],
                                  "high": part.loc["balanced_accuracy", "high"], "n": n_test},
        }
        kind = "ours" if "synthetic" in mode else "reference"
        source = f"{n_train.get(mode, 0)} training patches, {int(part['seeds'].iloc[0])} seeds"
        rows.append(StudyRow(name, kind, summaries, source))
    return rows


def class_fidelity(predicted: np.ndarray, labels: np.ndarray, level: float) -> dict[str, float]:
    """The share of the patches of each class that a classifier trained on real patches assigns to
    that class (GAN-test, Shmelkov, Schmid & Alahari 2018, https://arxiv.org/abs/1807.09499, per
    class): ``<class>`` with a Clopper-Pearson interval ``<class>_low`` / ``<class>_high`` at
    ``level`` and ``<class>_n``, for each class of ``CLASS_NAMES`` that has patches.

    On synthetic patches it says whether a class is drawn as that class (a lesion class drawn
    without lesions scores near the normal class's error rate); on held-out real patches the
    same numbers are the reference: what the classifier reaches on real images of that class.
    """
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or labels.ndim != 1:
        raise ValueError(f"class_fidelity: predictions of shape {predicted.shape} for labels of shape {labels.shape}; "
                         "expected two (N,) arrays of class ids.")
    out: dict[str, float] = {}
    for cls, name in enumerate(CLASS_NAMES):
        rows = labels == cls
        n = int(rows.sum())
        if n == 0:
            continue
        k = int((predicted[rows] == cls).sum())
        low, high = clopper_pearson(k, n, level)
        out |= {name: k / n, f"{name}_low": low, f"{name}_high": high, f"{name}_n": float(n)}
    return out


def spread(count: int, available: int) -> np.ndarray:
    """``min(count, available)`` indices spread evenly over ``range(available)``, first and last included
    (patches are stored patient after patient, so a grid row shows several patients, not one lesion's
    neighbouring slices)."""
    if available <= 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, available - 1, min(count, available)).round().astype(np.int64))


def sample_grid(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray, count: int):
    """Four rows of ``count`` patches: real lesion, synthetic lesion, real normal, synthetic normal, each
    row spread evenly over its class (``spread``)."""
    import matplotlib.pyplot as plt

    rows = [("real lesion", real, real_labels, LESION), ("synthetic lesion", fake, fake_labels, LESION),
            ("real normal", real, real_labels, NORMAL), ("synthetic normal", fake, fake_labels, NORMAL)]
    figure, axes = plt.subplots(4, count, figsize=(1.1 * count, 4.6), squeeze=False)
    for i, (title, images, labels, cls) in enumerate(rows):
        of_class = images[labels == cls]
        chosen = of_class[spread(count, len(of_class))]
        for j in range(count):
            axis = axes[i, j]
            axis.set_xticks([])
            axis.set_yticks([])
            if j < len(chosen):
                axis.imshow((np.clip(chosen[j, 0], -1.0, 1.0) + 1.0) / 2.0, cmap="gray", vmin=0.0, vmax=1.0)
            else:
                axis.axis("off")
        axes[i, 0].set_ylabel(title, fontsize=7)
    figure.tight_layout()
    return figure
