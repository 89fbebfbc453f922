"""Synthetic lesions for the sample cohort: irregular blobs inside brain tissue.

A lesion is a ball of a drawn radius whose surface is perturbed by smoothed noise (a
thresholded noise field inside the ball), kept to the connected part around its centre and
to brain parenchyma (grey or white matter). It has three regions: a core, a rim (the outer
``rim_mm`` of the lesion) and perilesional edema (a shell around it, in parenchyma only).
The lesion mask is core + rim; edema changes intensities but is not part of the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthmed.core.lazy import lazy_import

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
ndimage = lazy_import("scipy.ndimage")

# Values of the region volume returned by `place_lesions`.
EDEMA, RIM, CORE = 1, 2, 3
REGION_NAMES = {EDEMA: "edema", RIM: "rim", CORE: "core"}


@dataclass(frozen=True)
class LesionConfig:
    """``params:sample_cohort.lesions``."""

    fraction: float                  # share of subjects with lesions (rounded to a whole count)
    count: tuple[int, int]           # lesions per affected subject, inclusive range
    radius_mm: tuple[float, float]   # radius of the enclosing ball, drawn uniformly
    irregularity: float              # 0 = a ball; larger = a more ragged outline
    rim_mm: float                    # thickness of the rim inside the lesion outline
    edema_mm: tuple[float, float]    # width of the edema shell, drawn uniformly

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"sample_cohort.lesions.fraction must be in [0, 1], got {self.fraction}.")
        for name, (low, high), floor in (("count", self.count, 1), ("radius_mm", self.radius_mm, 0.5),
                                         ("edema_mm", self.edema_mm, 0.0)):
            if not floor <= low <= high:
                raise ValueError(f"sample_cohort.lesions.{name} must be [low, high] with {floor} <= low <= high, "
                                 f"got [{low}, {high}].")
        if not 0.0 <= self.irregularity < 1.0:
            raise ValueError(f"sample_cohort.lesions.irregularity must be in [0, 1), got {self.irregularity}.")
        if self.rim_mm < 0:
            raise ValueError(f"sample_cohort.lesions.rim_mm must be >= 0, got {self.rim_mm}.")


@dataclass(frozen=True)
class Lesion:
    """One placed lesion, in voxel and scanner (RAS mm) coordinates."""

    centre_voxel: tuple[int, int, int]
    centre_mm: tuple[float, float, float]
    radius_mm: float
    volume_ml: float     # core + rim, the voxels of this lesion in the lesion mask


def _irregular_ball(radius_vox: np.ndarray, irregularity: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean box with a noise-perturbed ball centred in it (never larger than the ball)."""
    half = np.ceil(radius_vox).astype(int)
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    distance = np.sqrt(sum((g / r) ** 2 for g, r in zip(grids, radius_vox)))  # 1 on the ball's surface
    noise = ndimage.gaussian_filter(rng.standard_normal(distance.shape), sigma=np.maximum(radius_vox / 4, 0.7))
    noise /= max(float(noise.std()), 1e-6)
    # The outline moves inward by up to `irregularity` of the radius where the noise is high
    # (a logistic of the noise: lobes and notches instead of a sphere); never outward.
    inward = irregularity / (1.0 + np.exp(-2.0 * noise))
    blob = distance <= 1.0 - inward
    blob[tuple(half)] = True  # the centre always belongs to its lesion
    labelled, _ = ndimage.label(blob)
    return labelled == labelled[tuple(half)]


def place_lesions(
    tissue: np.ndarray, parenchyma_labels: tuple[int, ...], spacing_mm: float, affine: np.ndarray,
    config: LesionConfig, rng: np.random.Generator, max_tries: int = 200,
) -> tuple[np.ndarray, np.ndarray, list[Lesion]]:
    """Draw 1..n lesions inside parenchyma, not touching each other.

    Args:
        tissue: integer tissue label volume of the (deformed) subject.
        parenchyma_labels: the labels of ``tissue`` a lesion may occupy (grey, white matter).
        spacing_mm: isotropic voxel size.
        affine: voxel -> RAS mm, for the lesion centres in mm.

    Returns:
        ``(regions, ids, lesions)``: a uint8 volume with ``EDEMA`` / ``RIM`` / ``CORE`` (0
        elsewhere), a uint8 volume with the number (1, 2, ...) of the lesion each lesion-mask
        voxel belongs to, and one ``Lesion`` per lesion placed. Fewer lesions than drawn are placed only when
        ``max_tries`` centres in a row did not fit (a very small brain); never zero.
    """
    parenchyma = np.isin(tissue, parenchyma_labels)
    candidates = np.argwhere(parenchyma)
    if not len(candidates):
        raise ValueError("The subject has no grey or white matter voxel to place a lesion in.")
    regions = np.zeros(tissue.shape, dtype=np.uint8)
    ids = np.zeros(tissue.shape, dtype=np.uint8)
    occupied = np.zeros(tissue.shape, dtype=bool)  # lesions and their edema
    lesions: list[Lesion] = []
    wanted = int(rng.integers(config.count[0], config.count[1] + 1))
    voxel_ml = spacing_mm**3 / 1000.0
    for _ in range(max_tries):
        if len(lesions) == wanted:
            break
        radius = float(rng.uniform(*config.radius_mm))
        edema = float(rng.uniform(*config.edema_mm))
        centre = candidates[int(rng.integers(len(candidates)))]
        blob = _irregular_ball(np.full(3, radius / spacing_mm), config.irregularity, rng)
        blob = np.pad(blob, int(np.ceil(edema / spacing_mm)) + 1)  # room for the edema shell
        half = np.array(blob.shape) // 2
        low, high = centre - half, centre + half + 1
        if np.any(low < 0) or np.any(high > np.array(tissue.shape)):
            continue  # the ball would leave the volume
        box = tuple(slice(a, b) for a, b in zip(low, high))
        lesion = blob & parenchyma[box]
        if occupied[box][lesion].any() or not lesion[tuple(half)]:
            continue
        # The rim: lesion voxels closer than rim_mm to the lesion's outline.
        inside_mm = ndimage.distance_transform_edt(lesion) * spacing_mm
        core = lesion & (inside_mm > config.rim_mm)
        shell = ndimage.distance_transform_edt(~lesion) * spacing_mm
        edema_box = (shell > 0) & (shell <= edema) & parenchyma[box] & ~occupied[box]
        view = regions[box]
        view[edema_box & (view == 0)] = EDEMA
        view[lesion] = RIM
        view[core] = CORE
        ids[box][lesion] = len(lesions) + 1
        occupied[box] |= lesion | edema_box
        centre_mm = affine[:3, :3] @ centre + affine[:3, 3]
        lesions.append(Lesion(tuple(int(c) for c in centre), tuple(round(float(c), 2) for c in centre_mm),
                              round(radius, 2), round(float(lesion.sum()) * voxel_ml, 4)))
    if not lesions:
        raise ValueError(f"No lesion of radius {config.radius_mm} mm fitted inside the brain in {max_tries} tries; "
                         "lower sample_cohort.lesions.radius_mm.")
    return regions, ids, lesions


def lesion_mask(regions: np.ndarray) -> np.ndarray:
    """The lesion mask (core + rim) of a region volume from `place_lesions`."""
    return (regions == RIM) | (regions == CORE)

