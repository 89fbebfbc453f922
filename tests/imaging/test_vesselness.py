"""Tests for synthmed.imaging.vesselness: vessel pseudo-labels on a synthetic fundus image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import draw

from synthmed.imaging.vesselness import field_of_view, vessel_mask

SIZE_PX = 96
FOV_THRESHOLD = 50
SETTINGS = {"sigmas": (1.0, 2.0), "quantile": 0.88, "fov_threshold": FOV_THRESHOLD, "min_size_px": 10}


def _synthetic_fundus() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright disc on black with three dark, 3 px wide "vessels" on the green channel.

    Returns:
        ``(rgb, lines, disc)``: the (H, W, 3) uint8 image and the (H, W) bool line and
        aperture masks.
    """
    rows, cols = np.mgrid[:SIZE_PX, :SIZE_PX]
    disc = (rows - SIZE_PX / 2) ** 2 + (cols - SIZE_PX / 2) ** 2 < 44**2
    lines = np.zeros((SIZE_PX, SIZE_PX), dtype=bool)
    for r0, c0, r1, c1 in [(20, 10, 20, 85), (10, 60, 85, 60), (15, 20, 80, 80)]:
        rr, cc = draw.line(r0, c0, r1, c1)
        lines[rr, cc] = True
    lines = ndimage.binary_dilation(lines, iterations=1) & disc
    rgb = np.zeros((SIZE_PX, SIZE_PX, 3), dtype=np.uint8)
    rgb[disc] = (200, 150, 80)
    rgb[..., 1][lines] = 60
    return rgb, lines, disc


def test_mask_covers_the_lines_and_little_else() -> None:
    rgb, lines, _ = _synthetic_fundus()
    mask = vessel_mask(rgb, **SETTINGS)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 1}
    vessels = mask.astype(bool)
    fov = field_of_view(rgb, FOV_THRESHOLD)
    recall = vessels[lines & fov].mean()
    near_lines = ndimage.binary_dilation(lines, iterations=2)
    false_fraction = (vessels & ~near_lines).sum() / vessels.sum()
    background_rate = vessels[fov & ~near_lines].mean()
    assert recall > 0.8, recall
    assert false_fraction < 0.05, false_fraction
    assert recall > 20 * background_rate


def test_nothing_outside_the_field_of_view() -> None:
    rgb, _, disc = _synthetic_fundus()
    mask = vessel_mask(rgb, **SETTINGS).astype(bool)
    fov = field_of_view(rgb, FOV_THRESHOLD)
    assert fov.sum() < disc.sum()  # eroded, so the aperture rim is excluded
    assert not (mask & ~fov).any()
    assert not (mask & ~disc).any()


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 4), (3, 32, 32)])
def test_bad_shapes_are_rejected_naming_the_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"\(H, W, 3\), got \({', '.join(map(str, shape))}\)"):
        vessel_mask(np.zeros(shape, dtype=np.uint8), **SETTINGS)


@pytest.mark.parametrize("quantile", [0.0, 1.0, 1.5, -0.1])
def test_quantile_outside_open_unit_interval_is_rejected(quantile: float) -> None:
    rgb, _, _ = _synthetic_fundus()
    with pytest.raises(ValueError, match=rf"quantile must be in \(0, 1\), got {quantile}"):
        vessel_mask(rgb, **{**SETTINGS, "quantile": quantile})
