"""The "inpainting" study: regenerate a region of a held-out slice, per structure, three ways.

Data: the axial slices of the multi-patient cohort (``extraction`` with conf/base)
with their label maps (``synthmed.imaging.labels``: 1 csf, 2 grey matter, 3 white matter,
4 lesion, 5 edema), resized to ``image_size`` (images area-averaged, label maps nearest); the split is
preprocessing's, by patient. Three ways to fill a region (``keep = 0``) of a real slice:

- diffusion: the ``ddpm`` family with ``conditioning: [inpaint]`` trained with synthmed's
  trainer on the training patients' slices (random rectangles, or with probability
  ``ddpm.MASK_HOLE_PROBABILITY`` the slice's structure mask, as holes), sampled with
  synthmed's sampler (``condition: inpaint`` plan rows; ``INPAINT_CASES``);
- Pix2Pix: the ``pix2pix`` family with ``mask_channels: 2``: its condition image is the
  masked slice and the keep mask (``pix2pix_condition``), trained to give the whole slice
  (the same holes, drawn once per training row with ``ddpm.random_keep``);
- neighbouring slice (the floor of the published study): the region copied from the
  extracted slice next to it in the same volume (``neighbour_rows``).

Every fill keeps the known pixels as they are (``composite``), so the methods differ only
inside the region.

Cases (the sampler's ``INPAINT_CASES``): ``inside_mask`` (regenerate one structure's mask),
``outside_box`` (keep the central box, regenerate around it), ``new_lesion`` (a held-out
lesion slice's lesion mask placed into a held-out slice without lesion, inside its tissue).

FID per structure (``inside_mask``): for each structure, the held-out slices where it covers
at least ``min_structure_px`` pixels (and that have a neighbouring slice) form a pool, split
into two disjoint halves A and B (``fidelity.real_floor_split``). Each method inpaints the
structure in the slices of A; FID compares the inpainted slices with their own originals
(A), as the published figure does (its neighbouring-slice FIDs of 0.05-0.07 are those of
almost unchanged slices); the real-vs-real floor is FID between A and B, two different sets
of real slices of the same N. Features: a domain encoder (``ConvClassifier``, normal vs
lesion) trained on the training patients' slices, as the evaluation pipeline's default.
Halves A and B hold different patients (``resampling.disjoint_halves``): a floor of two halves
sharing a patient would compare its slices with each other. Every FID has a percentile-bootstrap
interval (``fidelity.bootstrap_interval``) that draws patients whole, and its N.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.imaging.labels import LABEL_NAMES, LESION
from synthmed.protocols.studies import PublishedRow, StudyRow, check_held_out_splits

pd = lazy_import("pandas")
torch = lazy_import("torch")
logger = logging.getLogger(__name__)

METHODS = ("pix2pix", "diffusion", "neighbour")
# The table's columns: the published figure's three methods, then the real-vs-real floor.
METRICS = (*METHODS, "floor")
# The published figure's question: does diffusion inpaint closer to the real slices than Pix2Pix?
# FID(diffusion) - FID(pix2pix) on the same resampled patients answers it (``fid_difference``).
DIFFERENCE = ("diffusion", "pix2pix")
DIFFERENCE_KEY = f"{DIFFERENCE[0]}_minus_{DIFFERENCE[1]}"
METRIC_LABELS = {"pix2pix": "FID Pix2Pix", "diffusion": "FID Diffusion", "neighbour": "FID Neighbouring slice",
                 "floor": "FID floor (real A vs real B)"}
CASES = ("inside_mask", "outside_box", "new_lesion")
STRUCTURES = {name: value for value, name in LABEL_NAMES.items() if value != 0}
FID_VIEWS = ("slice", "crop")


@dataclass(frozen=True)
class PublishedStructure:
    """``study_inpainting.published[]``: one row of the published figure (a cited constant)."""

    label: str
    pix2pix: float
    diffusion: float
    neighbour: float
    citation: str


@dataclass(frozen=True)
class InpaintingEvaluation:
    """``study_inpainting.evaluation``.

    Args:
        structures: label-map structures inpainted (``inside_mask``), table rows in this order.
        held_out_splits: the patients evaluated on (never trained on).
        min_structure_px: a slice counts for a structure when its mask has at least this many
            pixels at ``image_size``.
        max_slices: at most this many slices per structure pool (drawn with ``seed``); each
            half has ``min(max_slices, pool) // 2``.
        max_neighbour_gap: the neighbouring slice is the nearest extracted slice of the same
            volume at most this many slice positions away (slices with less foreground than
            extraction's threshold are not extracted).
        new_lesions: ``new_lesion`` examples (held-out lesion masks placed into healthy slices).
        host_tissues: a lesion mask is placed into a healthy slice only where at least
            ``min_host_overlap`` of its pixels fall on these tissues of that slice.
        sampler: the diffusion sampler (``SamplerSpec`` keys).
        sample_seed: seed of the diffusion sampler and of Pix2Pix's test-time dropout.
        batch_size: images per generator pass.
        fid_view: ``slice`` (features of the whole slice) or ``crop`` (the region's bounding
            box with ``crop_margin_px``, resized to the slice size).
        encoder: ``ClassifierConfig`` keys besides channels / classes / size (``width``,
            ``feature_dim``); encoder_fit: ``FitConfig`` keys; encoder_seed: its seed.
        resamples, level, seed: the bootstrap of each FID; ``seed`` also draws pools and halves.
        grid_examples: rows of each case's figure.
    """

    structures: tuple[str, ...] = ("csf", "grey_matter", "white_matter", "lesion")
    held_out_splits: tuple[str, ...] = ("validation", "test")
    min_structure_px: int = 4
    max_slices: int = 96
    max_neighbour_gap: int = 2
    new_lesions: int = 16
    host_tissues: tuple[str, ...] = ("grey_matter", "white_matter")
    min_host_overlap: float = 0.9
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "ddim", "steps": 20})
    sample_seed: int = 0
    batch_size: int = 32
    fid_view: str = "slice"
    crop_margin_px: int = 2
    encoder: Mapping[str, Any] = field(default_factory=lambda: {"width": 16, "feature_dim": 32})
    encoder_fit: Mapping[str, Any] = field(default_factory=lambda: {"steps": 300, "batch_size": 32})
    encoder_seed: int = 0
    resamples: int = 200
    level: float = 0.95
    seed: int = 0
    grid_examples: int = 6

    def __post_init__(self) -> None:
        where = "study_inpainting.evaluation"
        unknown = [s for s in self.structures if s not in STRUCTURES]
        if not self.structures or unknown:
            raise ValueError(f"{where}.structures must be a non-empty list of {list(STRUCTURES)}, "
                             f"got {list(self.structures)}.")
        bad_hosts = [s for s in self.host_tissues if s not in STRUCTURES or s == LABEL_NAMES[LESION]]
        if not self.host_tissues or bad_hosts:
            raise ValueError(f"{where}.host_tissues must be tissues of {[s for s in STRUCTURES if s != 'lesion']}, "
                             f"got {list(self.host_tissues)}.")
        check_held_out_splits(f"{where}.held_out_splits", self.held_out_splits)
        if self.fid_view not in FID_VIEWS:
            raise ValueError(f"{where}.fid_view must be one of {list(FID_VIEWS)}, got {self.fid_view!r}.")
        for key, low in (("min_structure_px", 1), ("max_slices", 8), ("max_neighbour_gap", 1), ("new_lesions", 1),
                         ("batch_size", 1), ("resamples", 1), ("grid_examples", 1), ("crop_margin_px", 0)):
            if getattr(self, key) < low:
                raise ValueError(f"{where}.{key} must be >= {low}, got {getattr(self, key)!r}.")
        if not 0.0 < self.level < 1.0 or not 0.0 < self.min_host_overlap <= 1.0:
            raise ValueError(f"{where}: level must be in (0, 1) and min_host_overlap in (0, 1]; got {self.level} "
                             f"and {self.min_host_overlap}.")


@dataclass(frozen=True)
class InpaintingConfig:
    """``params:study_inpainting``.

    Args:
        image_size: side of the slices the study works at (area-downsampled from extraction's
            ``size_px``, which it must divide); both models' ``image_size`` must equal it.
        train_split: the patients the models (and the FID encoder) are trained on.
        variants: training rows per training slice, each with one structure present in the
            slice drawn at random as its mask (the trainer's structure-shaped holes).
        seed: draws those structures and Pix2Pix's training holes.
        checkpoint_root: parent folder of both models' checkpoints.
        evaluation: ``InpaintingEvaluation`` keys.
        published: the published figure's rows (cited constants).
        diffusion_model, diffusion_training: the ``ddpm`` family's ``Config`` (with
            ``conditioning: [inpaint]``) and ``TrainingConfig`` keys.
        pix2pix_model, pix2pix_training: the ``pix2pix`` family's (``mask_channels: 2``).
    """

    image_size: int = 32
    train_split: str = "train"
    variants: int = 2
    seed: int = 0
    checkpoint_root: str = "data/06_models/checkpoints"
    evaluation: InpaintingEvaluation = field(default_factory=InpaintingEvaluation)
    published: tuple[PublishedStructure, ...] = ()
    diffusion_model: Mapping[str, Any] = field(default_factory=dict)
    diffusion_training: Mapping[str, Any] = field(default_factory=dict)
    pix2pix_model: Mapping[str, Any] = field(default_factory=dict)
    pix2pix_training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.variants < 1:
            raise ValueError(f"study_inpainting: image_size must be >= 8 and variants >= 1; got {self.image_size} "
                             f"and {self.variants}.")
        if self.train_split in self.evaluation.held_out_splits:
            raise ValueError(f"study_inpainting.train_split {self.train_split!r} is also an evaluation held-out split "
                             f"{list(self.evaluation.held_out_splits)}.")


# ----------------------------------------------------------------------------- data


def working_arrays(images: np.ndarray, masks: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Slices and label maps at ``size``: ``images`` ``(N, 1, S, S)`` float32 in [-1, 1] (area-averaged),
    ``label_maps`` ``(N, 1, S, S)`` uint8 (nearest)."""
    images = np.asarray(images, dtype=np.float32)
    stored = int(images.shape[-1])
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"Expected slices with shape (N, 1, S, S), got {images.shape}.")
    if size > stored or stored % size:
        raise ValueError(f"study_inpainting.image_size {size} must divide the slices' size {stored} (downsampling "
                         "only): set extraction.slices.size_px or image_size.")
    labels = np.asarray(masks)
    if labels.shape != images.shape:
        raise ValueError(f"Expected label maps shaped like the slices {images.shape}, got {labels.shape}.")
    x = torch.from_numpy(np.ascontiguousarray(images))
    m = torch.from_numpy(labels.astype(np.float32))
    if size != stored:
        x = torch.nn.functional.interpolate(x, size=size, mode="area")
        m = torch.nn.functional.interpolate(m, size=size, mode="nearest")
    return {"images": x.numpy().astype(np.float32), "label_maps": m.round().numpy().astype(np.uint8)}


def neighbour_rows(manifest: pd.DataFrame, max_gap: int) -> np.ndarray:
    """For each manifest row (by ``index``), the ``index`` of the nearest other extracted slice of the
    same volume and plane (``item_id``, ``plane``, ``slice_index``) at most ``max_gap`` positions away,
    the next one on a tie; -1 when there is none."""
    needed = {"index", "item_id", "slice_index"}
    if not needed <= set(manifest.columns):
        raise ValueError(f"The slice manifest lacks {sorted(needed - set(manifest.columns))}: the neighbouring-slice "
                         "floor needs slices of volumes (item_id, slice_index).")
    out = np.full(int(manifest["index"].max()) + 1 if len(manifest) else 0, -1, dtype=np.int64)
    keys = ["item_id", "plane"] if "plane" in manifest.columns else ["item_id"]
    for _, rows in manifest.groupby(keys, sort=False):
        rows = rows.sort_values("slice_index")
        positions = rows["slice_index"].to_numpy()
        indices = rows["index"].to_numpy()
        for k in range(len(rows)):
            best, best_gap = -1, max_gap + 1
            for j in (k + 1, k - 1):  # next first: it wins a tie
                if 0 <= j < len(rows) and abs(positions[j] - positions[k]) < best_gap:
                    best, best_gap = int(indices[j]), abs(positions[j] - positions[k])
            out[indices[k]] = best
    return out


def structure_mask(label_maps: np.ndarray, structure: str) -> np.ndarray:
    """``(N, 1, S, S)`` uint8 mask of one structure (``STRUCTURES``) of the label maps."""
    if structure not in STRUCTURES:
        raise ValueError(f"Unknown structure {structure!r}; expected one of {list(STRUCTURES)}.")
    return (np.asarray(label_maps) == STRUCTURES[structure]).astype(np.uint8)


def training_rows(label_maps: np.ndarray, indices: np.ndarray, structures: Sequence[str], variants: int,
                  min_px: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training rows: ``variants`` per slice with at least one structure present, each with one of the
    structures present drawn at random (``np.random.default_rng(seed)``).

    Returns:
        ``(slice_index, masks)``: ``(R,)`` store rows and ``(R, 1, S, S)`` uint8 structure masks.
    """
    rng = np.random.default_rng(seed)
    rows, masks = [], []
    for i in np.asarray(indices, dtype=np.int64):
        present = [s for s in structures if int((label_maps[i] == STRUCTURES[s]).sum()) >= min_px]
        if not present:
            continue
        for _ in range(variants):
            rows.append(i)
            masks.append((label_maps[i] == STRUCTURES[present[rng.integers(len(present))]]).astype(np.uint8))
    if not rows:
        raise ValueError(f"No training slice holds any of the structures {list(structures)} with >= {min_px} pixels.")
    return np.asarray(rows, dtype=np.int64), np.stack(masks)


def pix2pix_condition(images: np.ndarray | Any, keep: np.ndarray | Any) -> np.ndarray:
    """The Pix2Pix condition image: ``(N, 2, S, S)`` float32 in [0, 1], channel 0 the known slice
    ``(x + 1) / 2 * keep``, channel 1 ``keep``. The family maps its mask input ``m`` to ``2 m - 1``,
    so the network sees the known pixels in [-1, 1] and -1 in the hole."""
    images, keep = np.asarray(images, dtype=np.float32), np.asarray(keep, dtype=np.float32)
    if images.shape != keep.shape or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"Expected images and keep masks of one shape (N, 1, S, S), got {images.shape} and "
                         f"{keep.shape}.")
    return np.concatenate([(images + 1.0) / 2.0 * keep, keep], axis=1).astype(np.float32)


class ConditionBatches:  # a map-style torch Dataset, as synthmed.generators.training.ArrayBatches
    """Training items for Pix2Pix: ``{"images": (1, S, S), "labels": (), "masks": (2, S, S)}``, the
    ``masks`` being the condition image (``pix2pix_condition``), not a binary mask: ``ArrayBatches``
    binarises its masks, so the study hands the trainer this dataset instead."""

    def __init__(self, images: np.ndarray, conditions: np.ndarray):
        if len(images) != len(conditions) or len(images) == 0:
            raise ValueError(f"Expected as many images as conditions (>= 1), got {len(images)} and {len(conditions)}.")
        self._images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        self._conditions = torch.from_numpy(np.ascontiguousarray(conditions, dtype=np.float32))

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"images": self._images[i], "labels": torch.tensor(0, dtype=torch.int64), "masks": self._conditions[i]}


def central_box_keep(size: int) -> np.ndarray:
    """``(1, S, S)`` uint8: 1 in the central box of side ``S - 2 * (S // 4)``, the sampler's ``outside_box``
    context (``synthmed.generators.sampling``; a test checks they agree)."""
    keep = np.zeros((1, size, size), np.uint8)
    a, b = size // 4, size - size // 4
    keep[:, a:b, a:b] = 1
    return keep


def composite(real: np.ndarray, fill: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``real`` where ``keep`` is 1, ``fill`` elsewhere (float32)."""
    keep = np.asarray(keep, dtype=bool)
    return np.where(keep, np.asarray(real, np.float32), np.asarray(fill, np.float32)).astype(np.float32)


# ----------------------------------------------------------------------------- the cases


def plan_cases(arrays: Mapping[str, np.ndarray], table: pd.DataFrame, neighbours: np.ndarray,
               config: InpaintingConfig) -> pd.DataFrame:
    """The evaluation's rows: which slice, which region, in which half.

    Columns: ``case``, ``structure``, ``index`` (the slice, or for ``new_lesion`` the host slice),
    ``mask_index`` (the slice whose mask is the region: itself, or the lesion donor), ``half``
    (``a``: inpainted and scored; ``b``: the floor's second real set, never inpainted) and
    ``patient_key`` (the slice's patient; None where the table has none). Where the table has
    patients, halves A and B of a pool hold different patients.
    """
    evaluation = config.evaluation
    from synthmed.metrics.fidelity import real_floor_split

    label_maps = arrays["label_maps"]
    held = table[table["split"].isin(evaluation.held_out_splits)]
    held = held[neighbours[held["index"].to_numpy()] >= 0]
    if held.empty:
        raise ValueError(f"No held-out slice (splits {list(evaluation.held_out_splits)}) with a neighbouring slice: "
                         "check preprocessing.split and extraction.slices.keep_every.")
    rng = np.random.default_rng(evaluation.seed)
    rows: list[dict[str, Any]] = []
    patient = table.set_index("index")["patient_key"] if "patient_key" in table else None

    def pool_rows(case: str, structure: str, pool: np.ndarray) -> None:
        if len(pool) < 4:
            logger.warning("study_inpainting: %s %s has %d held-out slices (< 4); left out", case, structure,
                           len(pool))
            return
        if len(pool) > evaluation.max_slices:
            pool = np.sort(rng.choice(pool, size=evaluation.max_slices, replace=False))
        groups = None if patient is None else patient.loc[pool].to_numpy()
        half_a, half_b = real_floor_split(torch.as_tensor(pool), len(pool) // 2, seed=evaluation.seed, groups=groups)
        for half, members in (("a", half_a), ("b", half_b)):
            rows.extend({"case": case, "structure": structure, "index": int(i), "mask_index": int(i), "half": half,
                         "patient_key": None if patient is None else patient.loc[int(i)]}
                        for i in members.tolist())

    index = held["index"].to_numpy()
    for structure in evaluation.structures:
        area = (label_maps[index] == STRUCTURES[structure]).reshape(len(index), -1).sum(axis=1)
        pool_rows("inside_mask", structure, index[area >= evaluation.min_structure_px])
    pool_rows("outside_box", "", index)
    rows.extend({**row, "patient_key": None if patient is None else patient.loc[row["index"]]}
                for row in _new_lesion_rows(label_maps, index, evaluation, rng))
    cases = pd.DataFrame(rows, columns=["case", "structure", "index", "mask_index", "half", "patient_key"])
    logger.info("study_inpainting cases: %s", cases[cases["half"] == "a"].groupby(["case", "structure"]).size()
                .to_dict())
    return cases


def _new_lesion_rows(label_maps: np.ndarray, index: np.ndarray, evaluation: InpaintingEvaluation,
                     rng: np.random.Generator) -> list[dict[str, Any]]:
    """Held-out lesion masks placed into held-out slices without lesion, inside the host's tissues."""
    lesion_px = (label_maps[index] == LESION).reshape(len(index), -1).sum(axis=1)
    donors = index[lesion_px >= evaluation.min_structure_px]
    hosts = index[lesion_px == 0]
    if len(donors) == 0 or len(hosts) == 0:
        logger.warning("study_inpainting: no new_lesion case (%d held-out lesion slices, %d without lesion)",
                       len(donors), len(hosts))
        return []
    tissue = np.isin(label_maps[hosts], [STRUCTURES[s] for s in evaluation.host_tissues])  # (H, 1, S, S)
    rows = []
    for donor in rng.permutation(donors)[: evaluation.new_lesions]:
        lesion = label_maps[donor] == LESION
        overlap = (tissue & lesion[None]).reshape(len(hosts), -1).sum(axis=1) / lesion.sum()
        fitting = hosts[overlap >= evaluation.min_host_overlap]
        if len(fitting) == 0:
            continue
        rows.append({"case": "new_lesion", "structure": "lesion", "index": int(rng.choice(fitting)),
                     "mask_index": int(donor), "half": "a"})
    if not rows:
        logger.warning("study_inpainting: no held-out healthy slice holds a lesion mask in its %s (>= %.0f%%)",
                       list(evaluation.host_tissues), 100 * evaluation.min_host_overlap)
    return rows


def keep_masks(cases: pd.DataFrame, label_maps: np.ndarray, size: int) -> np.ndarray:
    """``(R, 1, S, S)`` uint8 keep masks of the case rows (1 = known pixel)."""
    keep = np.ones((len(cases), 1, size, size), np.uint8)
    for k, row in enumerate(cases.itertuples()):
        if row.case == "outside_box":
            keep[k] = central_box_keep(size)
        else:
            value = LESION if row.case == "new_lesion" else STRUCTURES[row.structure]
            keep[k] = (label_maps[row.mask_index] != value).astype(np.uint8)
    return keep


def sampler_groups(cases: pd.DataFrame, images: np.ndarray, label_maps: np.ndarray
                   ) -> list[tuple[np.ndarray, dict[str, np.ndarray], str]]:
    """The sampler's inputs for the inpainted rows (half ``a``): per (case, structure) group, the case
    rows' positions, the ``real`` arrays and the plan row's case.

    ``new_lesion``: the sampler places the mask of real row ``j`` into the image of row ``j + 1``
    (``generators.sampling._expand``); row ``k`` holds donor ``k``'s lesion mask and host ``k - 1``'s
    image, so request ``k`` places donor ``k``'s lesion into host ``k``.
    """
    groups = []
    for (case, structure), rows in cases[cases["half"] == "a"].groupby(["case", "structure"], sort=False):
        positions = rows.index.to_numpy()
        slices = rows["index"].to_numpy()
        if case == "new_lesion":
            donors = rows["mask_index"].to_numpy()
            masks = np.concatenate([(label_maps[donors] == LESION), np.zeros_like(label_maps[:1], bool)])
            hosts = np.concatenate([images[slices[-1:]], images[slices]])
            real = {"images": hosts, "masks": masks.astype(np.uint8)}
        elif case == "outside_box":
            real = {"images": images[slices], "masks": np.zeros_like(label_maps[slices])}
        else:
            real = {"images": images[slices], "masks": structure_mask(label_maps[slices], structure)}
        groups.append((positions, real, case))
    return groups


# ----------------------------------------------------------------------------- scores


def region_crops(images: np.ndarray, keep: np.ndarray, margin: int) -> np.ndarray:
    """Each image's region (``keep == 0``) bounding box plus ``margin`` pixels, squared and resized
    (bilinear) to the image size: ``(N, 1, S, S)`` float32."""
    size = images.shape[-1]
    out = np.empty_like(np.asarray(images, np.float32))
    for k in range(len(images)):
        rows, cols = np.nonzero(keep[k, 0] == 0)
        if len(rows) == 0:
            out[k] = images[k]
            continue
        centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
        half = max(rows.max() - rows.min(), cols.max() - cols.min()) / 2 + margin + 0.5
        half = min(max(half, 2.0), size / 2)
        top = int(round(min(max(centre[0] - half, 0), size - 2 * half)))
        left = int(round(min(max(centre[1] - half, 0), size - 2 * half)))
        side = max(int(round(2 * half)), 2)
        crop = torch.from_numpy(np.ascontiguousarray(images[k : k + 1, :, top : top + side, left : left + side],
                                                     dtype=np.float32))
        out[k] = torch.nn.functional.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0].numpy()
    return out


def case_patients(cases: pd.DataFrame, rows: Any) -> np.ndarray | None:
    """The patient keys of case ``rows`` (labels of ``cases.index``), or None where cases have none."""
    if "patient_key" not in cases or cases["patient_key"].isna().any():
        return None
    return cases.loc[np.asarray(rows), "patient_key"].to_numpy()


def fid_summary(real: Any, fake: Any, evaluation: InpaintingEvaluation, *, real_groups: Any = None,
                fake_groups: Any = None, paired: bool = False) -> dict[str, float]:
    """FID of two feature sets with its bootstrap interval, as ``{"mean", "low", "high", "n"}``; with
    patient keys (``real_groups``, ``fake_groups``) the bootstrap draws patients whole and
    ``"patients"`` says how many the two sets hold together. ``paired``: ``fake[i]`` is a method's fill
    of ``real[i]``, so each resample takes the same rows (patients) of both
    (``fidelity.bootstrap_interval``)."""
    from synthmed.metrics.fidelity import bootstrap_interval, frechet_distance
    from synthmed.metrics.resampling import n_groups

    interval = bootstrap_interval(frechet_distance, real, fake, resamples=evaluation.resamples,
                                  level=evaluation.level, seed=evaluation.seed, real_groups=real_groups,
                                  fake_groups=fake_groups, paired=paired)
    out = {"mean": interval.estimate, "low": interval.low, "high": interval.high,
           "n": float(min(interval.n_real, interval.n_fake))}
    if real_groups is not None and fake_groups is not None:
        out["patients"] = float(n_groups(np.concatenate([np.asarray(real_groups, dtype=object),
                                                          np.asarray(fake_groups, dtype=object)])))
    return out


def structure_rows(features: Mapping[str, Any], cases: pd.DataFrame, evaluation: InpaintingEvaluation,
                   source: str) -> list[StudyRow]:
    """One ``ours`` row per structure: FID of each method's inpainted half A against the real half A, and the
    floor (real half B against real half A).

    Args:
        features: ``real`` and each method of ``METHODS``: ``(R, D)`` features of the case rows (``cases``
            order; the methods' rows of half ``b`` are never used).
    """
    rows = []
    for structure in evaluation.structures:
        mine = cases[(cases["case"] == "inside_mask") & (cases["structure"] == structure)]
        a = torch.as_tensor(np.array(mine.index[mine["half"] == "a"]))
        b = torch.as_tensor(np.array(mine.index[mine["half"] == "b"]))
        if len(a) < 2:
            continue
        rows.append(StudyRow(structure.replace("_", " "), "ours", half_summaries(features, cases, a, b, evaluation),
                             source))
    return rows


def half_summaries(features: Mapping[str, Any], cases: pd.DataFrame, a: Any, b: Any,
                   evaluation: InpaintingEvaluation) -> dict[str, dict[str, float]]:
    """``fid_summary`` of each method's fills of half A against the real half A (paired: a fill with
    its own slice), of the floor, the real half B against the real half A (other patients), and
    ``DIFFERENCE_KEY``: diffusion's FID minus Pix2Pix's (``fid_difference``)."""
    real_a, groups_a, groups_b = features["real"][a], case_patients(cases, a), case_patients(cases, b)
    summaries = {m: fid_summary(real_a, features[m][a], evaluation, real_groups=groups_a, fake_groups=groups_a,
                                paired=True) for m in METHODS}
    summaries["floor"] = fid_summary(real_a, features["real"][b], evaluation, real_groups=groups_a,
                                     fake_groups=groups_b)
    summaries[DIFFERENCE_KEY] = fid_difference(real_a, features[DIFFERENCE[0]][a], features[DIFFERENCE[1]][a],
                                               evaluation, groups=groups_a)
    return summaries


def fid_difference(real: Any, first: Any, second: Any, evaluation: InpaintingEvaluation, *,
                   groups: Any = None) -> dict[str, float]:
    """FID(real, first) - FID(real, second), with a percentile-bootstrap interval in which each resample
    draws the same slices (their patients whole, with ``groups``) of all three sets: ``first[i]`` and
    ``second[i]`` are two methods' fills of ``real[i]``. Below 0 with the whole interval: ``first`` is
    closer to the real slices on these patients; an interval across 0 leaves the order unresolved.
    Two separate intervals that overlap can still give a difference that excludes 0 (they share
    the draws' noise), so this is the test of which method is closer."""
    from synthmed.metrics.fidelity import bootstrap_interval, frechet_distance

    real, first, second = (torch.as_tensor(x, dtype=torch.float64) for x in (real, first, second))
    width = real.shape[1]
    stacked = torch.cat([real, first, second], dim=1)  # one row per slice: drawn together

    def statistic(rows: torch.Tensor, _: torch.Tensor) -> float:
        reference = rows[:, :width]
        return (float(frechet_distance(reference, rows[:, width:2 * width]))
                - float(frechet_distance(reference, rows[:, 2 * width:])))

    interval = bootstrap_interval(statistic, stacked, stacked, resamples=evaluation.resamples,
                                  level=evaluation.level, seed=evaluation.seed, real_groups=groups, paired=True)
    return {"mean": interval.estimate, "low": interval.low, "high": interval.high, "n": float(interval.n_real)}


def published_rows(published: Sequence[PublishedStructure]) -> list[PublishedRow]:
    return [PublishedRow(f"published: {p.label}", {"pix2pix": p.pix2pix, "diffusion": p.diffusion,
                                                   "neighbour": p.neighbour}, p.citation) for p in published]


def region_means(images: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``(N,)`` mean intensity inside each image's region (``keep == 0``)."""
    hole = np.asarray(keep) == 0
    return (np.asarray(images) * hole).reshape(len(images), -1).sum(axis=1) / np.maximum(
        hole.reshape(len(images), -1).sum(axis=1), 1)


def region_mse(fake: np.ndarray, real: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``(N,)`` mean squared error inside each image's region (images in [-1, 1])."""
    hole = np.asarray(keep) == 0
    error = (np.asarray(fake, np.float64) - np.asarray(real, np.float64)) ** 2 * hole
    return error.reshape(len(fake), -1).sum(axis=1) / np.maximum(hole.reshape(len(fake), -1).sum(axis=1), 1)


def case_grid(context: np.ndarray, keep: np.ndarray, columns: Mapping[str, np.ndarray], labels: Sequence[str],
              count: int, title: str):
    """A figure, one row per example: context (the hole in red) | each of ``columns`` (real, methods)."""
    import matplotlib.pyplot as plt

    count = min(count, len(context))
    names = ["context", *columns]
    figure, axes = plt.subplots(count, len(names), figsize=(1.6 * len(names), 1.6 * count + 0.4), squeeze=False)
    for i in range(count):
        grey = (np.clip(context[i, 0], -1, 1) + 1) / 2
        rgb = np.stack([grey] * 3, axis=-1)
        rgb[keep[i, 0] == 0] = (0.85, 0.1, 0.1)
        panels = [rgb] + [(np.clip(columns[n][i, 0], -1, 1) + 1) / 2 for n in columns]
        for j, panel in enumerate(panels):
            axes[i, j].imshow(panel, cmap=None if panel.ndim == 3 else "gray", vmin=0.0, vmax=1.0)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(names[j], fontsize=8)
        axes[i, 0].set_ylabel(labels[i], fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure
