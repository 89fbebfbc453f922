"""Several fundus "photographs" from one bundled photograph, each with its vessel pseudo-label.

scikit-image ships one colour fundus photograph (``retina.jpg``, 1411 x 1411, one left eye).
To give splits and paired metrics more than one image, it is cut into a ``grid x grid`` of
sub-fields; a sub-field whose share of the camera's field of view is at least
``min_fov_fraction`` is a *source region*. Regions do not overlap, so two regions share no
vessel pixel; every photograph is made from one region only and carries the region's name as
its group key (a split must keep one region in one split).

Each region gives ``per_region`` photographs: a seeded rotation (zoomed in just enough that
every output pixel samples inside the region, so no neighbouring region leaks in), an
optional horizontal flip, gamma, brightness and Gaussian noise (scikit-image transforms and
numpy; one ``np.random.default_rng([seed, region, k])`` per photograph, so a photograph does
not change when others are added). The vessel mask is computed once on the whole photograph
(``synthmed.imaging.vesselness``) and moved with the same geometric transform (nearest
neighbour), so image and mask stay aligned.

All photographs come from the same eye: held-out regions are other vessels of the same
retina, not another patient.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from synthmed.imaging.vesselness import field_of_view, vessel_mask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FundusAugmentation:
    """``sample_data.fundus.augmentation``: per-photograph random changes (ranges are +-).

    Args:
        degrees: rotation angle range.
        zoom: extra zoom in ``[1, 1 + zoom]`` on top of the zoom that keeps a rotated
            sub-field inside its region.
        hflip: flip left-right with probability 0.5.
        log_gamma: gamma ``exp(u)`` with ``u`` uniform in ``[-log_gamma, log_gamma]``.
        brightness: intensity factor in ``[1 - brightness, 1 + brightness]``.
        noise_std: Gaussian noise, standard deviation in 0-255 units.
    """

    degrees: float = 10.0
    zoom: float = 0.1
    hflip: bool = True
    log_gamma: float = 0.15
    brightness: float = 0.1
    noise_std: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.degrees <= 45.0:
            raise ValueError(f"sample_data.fundus.augmentation.degrees must be in [0, 45], got {self.degrees}.")
        for name in ("zoom", "log_gamma", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"sample_data.fundus.augmentation.{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.brightness < 1.0:
            raise ValueError(
                f"sample_data.fundus.augmentation.brightness must be in [0, 1), got {self.brightness}."
            )


@dataclass(frozen=True)
class FundusSampleConfig:
    """``params:sample_data.fundus``.

    Args:
        sigmas, quantile, fov_threshold, min_size_px: the vessel pseudo-label
            (``synthmed.imaging.vesselness.vessel_mask``).
        seed: seeds every photograph's augmentation.
        grid: the photograph is cut into ``grid x grid`` sub-fields.
        min_fov_fraction: a sub-field is a source region when at least this share of it
            lies inside the field of view (corners of the round aperture are mostly black).
        per_region: augmented photographs made from each region.
        augmentation: ``FundusAugmentation`` keys.
    """

    sigmas: tuple[float, ...]
    quantile: float
    fov_threshold: float
    min_size_px: int
    seed: int = 0
    grid: int = 2
    min_fov_fraction: float = 0.5
    per_region: int = 1
    augmentation: FundusAugmentation = field(default_factory=FundusAugmentation)

    def __post_init__(self) -> None:
        if not 1 <= self.grid <= 8:
            raise ValueError(f"sample_data.fundus.grid must be in [1, 8], got {self.grid}.")
        if not 0.0 <= self.min_fov_fraction <= 1.0:
            raise ValueError(f"sample_data.fundus.min_fov_fraction must be in [0, 1], got {self.min_fov_fraction}.")
        if self.per_region < 1:
            raise ValueError(f"sample_data.fundus.per_region must be >= 1, got {self.per_region}.")


@dataclass(frozen=True)
class Region:
    """A sub-field ``rows x cols`` of the source photograph; ``name`` is its group key."""

    name: str
    rows: tuple[int, int]
    cols: tuple[int, int]
    fov_fraction: float


@dataclass(frozen=True)
class FundusPhoto:
    """One derived photograph: ``rgb`` ``(S, S, 3)`` uint8, ``mask`` ``(S, S)`` uint8 (1 = vessel)."""

    name: str
    region: str
    index: int
    rgb: np.ndarray
    mask: np.ndarray
    angle_deg: float
    zoom: float
    flipped: bool
    gamma: float
    brightness: float


def source_regions(rgb: np.ndarray, config: FundusSampleConfig) -> list[Region]:
    """The non-overlapping sub-fields kept as source regions, row by row."""
    fov = field_of_view(rgb, config.fov_threshold)
    side = min(rgb.shape[:2]) // config.grid
    regions = []
    for i in range(config.grid):
        for j in range(config.grid):
            rows, cols = (i * side, (i + 1) * side), (j * side, (j + 1) * side)
            fraction = float(fov[rows[0]:rows[1], cols[0]:cols[1]].mean())
            if fraction >= config.min_fov_fraction:
                regions.append(Region(f"r{i}{j}", rows, cols, fraction))
    if not regions:
        raise ValueError(
            f"No sub-field of the {config.grid}x{config.grid} grid has a field-of-view share >= "
            f"{config.min_fov_fraction}: lower sample_data.fundus.min_fov_fraction or the grid."
        )
    return regions


def inverse_transform(side: int, angle_deg: float, zoom: float, flip: bool):
    """The map from output (x, y) to input (x, y) of a rotation about the centre, zoom and left-right flip."""
    from skimage.transform import AffineTransform

    centre = (side - 1) / 2.0
    theta = np.deg2rad(angle_deg)
    cos, sin = np.cos(theta) / zoom, np.sin(theta) / zoom
    sign = -1.0 if flip else 1.0
    matrix = np.array([[sign * cos, -sin, 0.0], [sign * sin, cos, 0.0], [0.0, 0.0, 1.0]])
    shift = np.array([[1.0, 0.0, centre], [0.0, 1.0, centre], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, -centre], [0.0, 1.0, -centre], [0.0, 0.0, 1.0]])
    return AffineTransform(matrix=shift @ matrix @ back)


def _warp(image: np.ndarray, angle_deg: float, zoom: float, flip: bool, order: int) -> np.ndarray:
    """Rotate about the centre, zoom in by ``zoom`` and optionally flip, same size out."""
    from skimage.transform import warp

    # "edge" only guards rounding at the border: the zoom keeps every sample inside the region.
    return warp(image, inverse_transform(image.shape[0], angle_deg, zoom, flip), order=order, mode="edge",
                preserve_range=True)


def augment_region(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                   aug: FundusAugmentation) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One augmented copy of a square region (``rgb`` uint8, ``mask`` 0/1) and the draws made."""
    angle = float(rng.uniform(-aug.degrees, aug.degrees))
    theta = np.deg2rad(abs(angle))
    # The rotated output square fits inside the input square when zoomed in by |cos| + |sin|.
    zoom = float((np.cos(theta) + np.sin(theta)) * rng.uniform(1.0, 1.0 + aug.zoom))
    flip = bool(aug.hflip and rng.random() < 0.5)
    gamma = float(np.exp(rng.uniform(-aug.log_gamma, aug.log_gamma)))
    brightness = float(rng.uniform(1.0 - aug.brightness, 1.0 + aug.brightness))
    image = _warp(rgb.astype(np.float64) / 255.0, angle, zoom, flip, order=1)
    image = np.clip(image, 0.0, 1.0) ** gamma * brightness * 255.0
    if aug.noise_std > 0:
        image = image + rng.normal(0.0, aug.noise_std, size=image.shape)
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    moved = _warp(mask.astype(np.float64), angle, zoom, flip, order=0)
    draws = {"angle_deg": angle, "zoom": zoom, "flipped": flip, "gamma": gamma, "brightness": brightness}
    return out, (moved > 0.5).astype(np.uint8), draws


def build_fundus_photos(rgb: np.ndarray, config: FundusSampleConfig) -> list[FundusPhoto]:
    """Every derived photograph of ``rgb`` (the whole fundus photograph, ``(H, W, 3)`` uint8)."""
    mask = vessel_mask(rgb, sigmas=tuple(config.sigmas), quantile=config.quantile,
                       fov_threshold=config.fov_threshold, min_size_px=config.min_size_px)
    photos = []
    for r, region in enumerate(source_regions(rgb, config)):
        window = (slice(*region.rows), slice(*region.cols))
        for k in range(config.per_region):
            # One stream per (region, copy): a photograph stays the same when others are added.
            rng = np.random.default_rng([config.seed, r, k])
            image, vessels, draws = augment_region(rgb[window], mask[window], rng, config.augmentation)
            photos.append(FundusPhoto(name=f"retina_{region.name}_a{k}", region=region.name, index=k, rgb=image,
                                      mask=vessels, **draws))
    logger.info("Fundus photographs: %d from %d regions of a %dx%d grid, %d px each, vessel fraction %.3f",
                len(photos), len({p.region for p in photos}), config.grid, config.grid, photos[0].rgb.shape[0],
                float(np.mean([p.mask.mean() for p in photos])))
    return photos
