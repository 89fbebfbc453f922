"""Vessel pseudo-labels for fundus photographs (used to build the bundled sample).

The mask is a *pseudo-label*: a multiscale Sato tubeness filter (Sato et al. 1998,
"Three-dimensional multi-scale line filter for segmentation and visualization of
curvilinear structures in medical images", Med. Image Anal. 2(2)) on the green channel,
where retinal vessels have the highest contrast, thresholded at a quantile inside the
field of view. It is good enough to condition patch extraction and mask-to-image models
on the sample; it is not a clinical segmentation.
"""

from __future__ import annotations

import numpy as np

from synthmed.core.lazy import lazy_import

# On first use: the parameter check imports this module's neighbours for their configurations.
ndimage = lazy_import("scipy.ndimage")
filters = lazy_import("skimage.filters")
morphology = lazy_import("skimage.morphology")


def field_of_view(rgb: np.ndarray, threshold: float) -> np.ndarray:
    """Bright circular camera aperture: red channel above ``threshold`` (0-255 scale).

    Args:
        rgb: ``(H, W, 3)`` uint8 fundus photograph.
        threshold: red-channel value that separates the aperture from the black border.

    Returns:
        ``(H, W)`` bool mask, eroded by a few pixels so the aperture rim is not a "vessel".
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"Expected an RGB image with shape (H, W, 3), got {rgb.shape}.")
    fov = rgb[..., 0] > threshold
    return ndimage.binary_erosion(fov, structure=morphology.disk(5))


def vessel_mask(
    rgb: np.ndarray,
    *,
    sigmas: tuple[float, ...],
    quantile: float,
    fov_threshold: float,
    min_size_px: int,
) -> np.ndarray:
    """Binary vessel pseudo-label of a fundus photograph.

    Args:
        rgb: ``(H, W, 3)`` uint8 fundus photograph.
        sigmas: filter scales in pixels (vessel radii to respond to).
        quantile: fraction of field-of-view pixels *below* the threshold (0.88 keeps the
            12% most tubular pixels, about the vessel area fraction of a fundus image).
        fov_threshold: see ``field_of_view``.
        min_size_px: connected components smaller than this are removed (speckle).

    Returns:
        ``(H, W)`` uint8 mask with 1 = vessel, 0 = background.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}.")
    fov = field_of_view(rgb, fov_threshold)
    green = rgb[..., 1].astype(np.float32) / 255.0
    # Vessels are dark on a bright background: black ridges.
    tubeness = filters.sato(green, sigmas=sigmas, black_ridges=True)
    threshold = np.quantile(tubeness[fov], quantile)
    vessels = (tubeness > threshold) & fov
    vessels = morphology.remove_small_objects(vessels, max_size=min_size_px - 1)
    return vessels.astype(np.uint8)
