"""Tests for synthmed.imaging.intensity: windowing, clipping, histograms, [-1, 1] scaling."""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.imaging.intensity import (
    HISTOGRAM_METHODS,
    IntensitySpec,
    apply_intensity,
    clip_percentiles,
    foreground_mask,
    normalise_histogram,
    scale_to_unit,
    window,
)


@pytest.fixture
def ct_like() -> np.ndarray:
    """(1, 16, 16) int16 "CT": air at -1000 around a 8 x 8 body of 0..630 HU."""
    image = np.full((1, 16, 16), -1000, dtype=np.int16)
    image[0, 4:12, 4:12] = np.arange(64, dtype=np.int16).reshape(8, 8) * 10
    return image


def test_window_clips_to_bounds_and_returns_float32(ct_like: np.ndarray) -> None:
    out = window(ct_like, -100.0, 300.0)
    assert out.dtype == np.float32
    assert out.min() == -100.0 and out.max() == 300.0
    # Values inside the window pass through unchanged.
    assert out[0, 4, 6] == 20.0


def test_window_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match=r"low=400.0, high=-1000.0"):
        window(np.zeros((1, 2, 2)), 400.0, -1000.0)


def test_clip_percentiles_ignores_masked_out_background(ct_like: np.ndarray) -> None:
    body = ct_like > -500
    _, (lo_all, _) = clip_percentiles(ct_like, 5.0, 95.0)
    clipped, (lo, hi) = clip_percentiles(ct_like, 5.0, 95.0, mask=body)
    # 75 % of the image is air: the unmasked 5th percentile is air, the masked one is not.
    assert lo_all == -1000.0
    body_values = ct_like[body].astype(np.float64)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(body_values, [5.0, 95.0])))
    assert lo > 0.0
    # All voxels are clipped, the background included.
    assert clipped.dtype == np.float32
    assert clipped.min() == pytest.approx(lo) and clipped.max() == pytest.approx(hi)


def test_clip_percentiles_accepts_a_mask_shared_by_channels() -> None:
    rgb = np.stack([np.arange(16.0).reshape(4, 4)] * 3)
    shared = np.zeros((1, 4, 4), dtype=bool)
    shared[0, 2:] = True  # values 8..15 in every channel
    _, (lo, hi) = clip_percentiles(rgb, 0.0, 100.0, mask=shared)
    assert (lo, hi) == (8.0, 15.0)


@pytest.mark.parametrize(
    ("low", "high", "match"),
    [
        (-1.0, 50.0, r"low_pct=-1.0, high_pct=50.0"),
        (60.0, 40.0, r"low_pct=60.0, high_pct=40.0"),
        (0.0, 101.0, r"low_pct=0.0, high_pct=101.0"),
    ],
)
def test_clip_percentiles_rejects_bad_percentiles(low: float, high: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        clip_percentiles(np.zeros((1, 2, 2)), low, high)


def test_clip_percentiles_rejects_empty_and_misshaped_masks() -> None:
    image = np.zeros((1, 4, 4))
    with pytest.raises(ValueError, match=r"empty mask"):
        clip_percentiles(image, 1.0, 99.0, mask=np.zeros((1, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"got \(4, 5\)"):
        clip_percentiles(image, 1.0, 99.0, mask=np.ones((4, 5), dtype=bool))


def test_equalize_output_range_and_mask(ct_like: np.ndarray) -> None:
    body = ct_like > -500
    out = normalise_histogram(ct_like, "equalize", mask=body)
    assert out.dtype == np.float32
    assert out.min() > 0.0 and out.max() == pytest.approx(1.0)
    # The CDF comes from the body only: its values spread evenly over (0, 1].
    assert np.median(out[body]) == pytest.approx(0.5, abs=0.05)


def test_zscore_has_zero_mean_unit_std_in_mask(ct_like: np.ndarray) -> None:
    body = ct_like > -500
    out = normalise_histogram(ct_like, "zscore", mask=body)
    assert out[body].mean() == pytest.approx(0.0, abs=1e-5)
    assert out[body].std() == pytest.approx(1.0, abs=1e-5)


def test_zscore_of_a_constant_image_stays_finite() -> None:
    out = normalise_histogram(np.full((1, 3, 3), 7.0), "zscore")
    assert np.all(out == 0.0)


def test_normalise_histogram_lists_valid_methods() -> None:
    with pytest.raises(ValueError, match=r"\['none', 'equalize', 'zscore'\], got 'clahe'"):
        normalise_histogram(np.zeros((1, 2, 2)), "clahe")


def test_scale_to_unit_maps_min_and_max_exactly() -> None:
    x = np.array([[[3.0, 5.0], [7.0, 11.0]]])
    out = scale_to_unit(x)
    assert out.dtype == np.float32
    assert out.min() == -1.0 and out.max() == 1.0
    assert out[0, 0, 1] == pytest.approx(-0.5)


def test_scale_to_unit_clips_outside_given_range() -> None:
    out = scale_to_unit(np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0]), -1000.0, 400.0)
    np.testing.assert_allclose(out, [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-6)


def test_scale_to_unit_constant_is_background() -> None:
    out = scale_to_unit(np.full((1, 4, 4), 42, dtype=np.int16))
    assert out.dtype == np.float32
    assert np.all(out == -1.0)


def test_scale_to_unit_rejects_inverted_range() -> None:
    with pytest.raises(ValueError, match=r"lo=5.0 \(given\) and hi=1.0 \(given\)"):
        scale_to_unit(np.zeros(3), 5.0, 1.0)


def test_foreground_mask_is_strictly_greater() -> None:
    x = np.array([[[-1.0, 0.0, 0.5]]])
    np.testing.assert_array_equal(foreground_mask(x, 0.0), [[[False, False, True]]])


def _noisy_mr(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(1, 8, 48, 48) "MR": a disc of tissue (grey 800, a dark CSF core of 250) on Rayleigh
    background noise of scale 12, as a magnitude image's air is; and the disc's mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 24) ** 2 + (xx - 24) ** 2 < 15**2
    core = (yy - 24) ** 2 + (xx - 24) ** 2 < 5**2
    slab = np.where(core, 250.0, np.where(disc, 800.0, 0.0))
    volume = np.stack([slab] * 8)[None] + rng.rayleigh(12.0, (1, 8, 48, 48)) + rng.normal(0, 20, (1, 8, 48, 48)) * disc
    return volume.astype(np.float32), np.stack([disc] * 8)[None]


def test_a_fixed_zero_counts_background_noise_as_foreground_and_triangle_does_not() -> None:
    volume, tissue = _noisy_mr()
    assert foreground_mask(volume, 0.0).mean() == 1.0  # Rayleigh noise is never <= 0: all "foreground"
    found = foreground_mask(volume, "triangle")
    assert (tissue & ~found).sum() == 0  # the dark CSF core (250) is kept
    assert (found & ~tissue).sum() < 0.001 * (~tissue).sum()  # the noise is not


def test_triangle_foreground_puts_the_background_at_minus_one_and_rejects_unknown_methods() -> None:
    volume, tissue = _noisy_mr(1)
    spec = IntensitySpec.from_params({"window_hu": None, "clip_percentiles": [0.5, 99.5],
                                      "foreground_threshold": "triangle"})
    scaled, foreground = apply_intensity(volume, spec)
    assert np.array_equal(foreground, foreground_mask(volume.mean(axis=0, keepdims=True), "triangle"))
    assert np.all(scaled[~tissue] == -1.0)  # the percentiles are the tissue's: all noise lies below them
    assert (scaled[tissue] > -1.0).mean() > 0.99  # and the tissue, dark CSF included, keeps its values
    fixed, _ = apply_intensity(volume, IntensitySpec(window_hu=None, clip_percentiles=(0.5, 99.5)))
    assert (fixed[~tissue] > -1.0).mean() > 0.9  # with 0.0 the noise sets the low percentile and keeps a value
    assert not foreground_mask(np.full((1, 4, 4), 7.0), "triangle").any()  # one value: no foreground
    with pytest.raises(ValueError, match=r"one of \['triangle'\], got 'otsu'"):
        IntensitySpec(window_hu=None, clip_percentiles=None, foreground_threshold="otsu")
    with pytest.raises(ValueError, match=r"one of \['triangle'\], got 'li'"):
        foreground_mask(volume, "li")


def test_functions_do_not_mutate_inputs(ct_like: np.ndarray) -> None:
    original = ct_like.copy()
    body = ct_like > -500
    float_input = ct_like.astype(np.float32)
    float_original = float_input.copy()
    window(ct_like, -100.0, 300.0)
    clip_percentiles(float_input, 1.0, 99.0, mask=body)
    for method in HISTOGRAM_METHODS:
        normalise_histogram(float_input, method, mask=body)
    scale_to_unit(float_input)
    apply_intensity(float_input, IntensitySpec((-100.0, 300.0), (1.0, 99.0), "zscore"))
    np.testing.assert_array_equal(ct_like, original)
    np.testing.assert_array_equal(float_input, float_original)


def test_apply_intensity_uses_the_window_as_the_fixed_range(ct_like: np.ndarray) -> None:
    spec = IntensitySpec(window_hu=(-1000.0, 1000.0), clip_percentiles=None)
    scaled, foreground = apply_intensity(ct_like, spec)
    assert scaled.dtype == np.float32 and foreground.dtype == bool
    assert foreground.shape == (1, 16, 16)
    assert foreground.sum() == 63  # the body voxel at 0 HU is not > 0
    # -1000 HU -> -1, 0 HU -> 0 wherever it sits in the data's own range.
    assert scaled[0, 0, 0] == -1.0
    assert scaled[0, 4, 4] == pytest.approx(0.0, abs=1e-6)
    assert scaled[0, 4, 5] == pytest.approx(10.0 / 1000.0, abs=1e-6)


def test_apply_intensity_full_chain_stays_in_unit_range(ct_like: np.ndarray) -> None:
    spec = IntensitySpec.from_params(
        {
            "window_hu": [-200, 500],
            "clip_percentiles": [2, 98],
            "histogram": "equalize",
            "foreground_threshold": -500,
        }
    )
    scaled, foreground = apply_intensity(ct_like, spec)
    assert foreground.sum() == 64
    assert scaled.min() == -1.0 and scaled.max() == 1.0


def test_apply_intensity_rgb_uses_the_channel_mean_for_foreground() -> None:
    rgb = np.zeros((3, 4, 4), dtype=np.float32)
    rgb[0, 0, 0] = 3.0  # channel mean 1.0
    rgb[1, 1, 1] = 0.3  # channel mean 0.1
    spec = IntensitySpec(window_hu=None, clip_percentiles=None, foreground_threshold=0.5)
    scaled, foreground = apply_intensity(rgb, spec)
    assert foreground.shape == (1, 4, 4)
    assert np.argwhere(foreground).tolist() == [[0, 0, 0]]
    assert scaled.shape == (3, 4, 4) and scaled.max() == 1.0


def test_apply_intensity_reports_an_empty_foreground() -> None:
    spec = IntensitySpec(window_hu=None, clip_percentiles=(1.0, 99.0), foreground_threshold=5.0)
    with pytest.raises(ValueError, match=r"foreground_threshold=5.0 \(max is 1.0\)"):
        apply_intensity(np.ones((1, 4, 4)), spec)


def test_intensity_spec_from_params_rejects_unknown_and_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"\['window'\]"):
        IntensitySpec.from_params({"window": [0, 1], "window_hu": None, "clip_percentiles": None})
    with pytest.raises(ValueError, match=r"Missing .*\['clip_percentiles'\]"):
        IntensitySpec.from_params({"window_hu": None})


def test_intensity_spec_validates_values() -> None:
    with pytest.raises(ValueError, match=r"window_hu with low < high, got \[400.0, -1000.0\]"):
        IntensitySpec(window_hu=(400, -1000), clip_percentiles=None)
    with pytest.raises(ValueError, match=r"histogram .* got 'clahe'"):
        IntensitySpec(window_hu=None, clip_percentiles=None, histogram="clahe")
    spec = IntensitySpec.from_params({"window_hu": [-1000, 400], "clip_percentiles": None})
    assert spec.window_hu == (-1000.0, 400.0)
