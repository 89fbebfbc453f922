"""Tests for synthmed.imaging.geometry: resampling, resizing and square padding."""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.imaging.geometry import (
    pad_to_square,
    resample_to_spacing,
    resize_2d,
    resize_longest_side,
)


def test_resample_2mm_to_1mm_doubles_shape_with_exact_spacing() -> None:
    volume = np.random.default_rng(0).normal(size=(1, 8, 6, 4)).astype(np.float32)
    out, spacing = resample_to_spacing(volume, (2.0, 2.0, 2.0), (1.0, 1.0, 1.0), order=1)
    assert out.shape == (1, 16, 12, 8)
    assert out.dtype == np.float32
    assert spacing == (1.0, 1.0, 1.0)


def test_resample_reports_the_achieved_not_the_requested_spacing() -> None:
    image = np.zeros((1, 10, 7), dtype=np.float32)
    # 10 x 1.0 mm = 10 mm -> 3 px of 3.333 mm; 7 x 1.0 mm -> round(2.33) = 2 px of 3.5 mm.
    out, spacing = resample_to_spacing(image, (1.0, 1.0), (3.0, 3.0), order=1)
    assert out.shape == (1, 3, 2)
    assert spacing == pytest.approx((10.0 / 3.0, 3.5))


def test_resample_mask_keeps_exactly_its_label_set_and_dtype() -> None:
    mask = np.zeros((1, 12, 10, 8), dtype=np.uint8)
    mask[0, 2:6, 2:6, 1:5] = 1
    mask[0, 7:11, 4:9, 3:7] = 2
    mask[0, 0:3, 7:10, 5:8] = 5
    for target in [(0.5, 0.5, 0.5), (1.5, 2.0, 1.0)]:
        out, _ = resample_to_spacing(mask, (1.0, 1.0, 1.0), target, order=0)
        assert out.dtype == np.uint8
        assert set(np.unique(out)) == {0, 1, 2, 5}


def test_resample_downsampling_image_is_anti_aliased() -> None:
    # A one-pixel checkerboard has no representation at a third of the resolution. The new
    # pixel centres fall exactly on old ones (3i + 1), so plain linear sampling would keep
    # alternating 0s and 1s (ptp 1.0); the anti-aliasing filter averages them to grey.
    checker = (np.indices((33, 33)).sum(axis=0) % 2).astype(np.float32)[None]
    out, _ = resample_to_spacing(checker, (1.0, 1.0), (3.0, 3.0), order=1)
    assert out.shape == (1, 11, 11)
    assert np.ptp(out[0, 3:-3, 3:-3]) < 0.1


def test_resample_none_target_is_unchanged() -> None:
    image = np.ones((1, 4, 4), dtype=np.int16)
    out, spacing = resample_to_spacing(image, [0.7, 0.7], None, order=1)
    assert out is image and spacing == (0.7, 0.7)


def test_resample_validates_spacing() -> None:
    image = np.zeros((1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"spacing with 3 values .* got 2: \[1.0, 1.0\]"):
        resample_to_spacing(image, (1.0, 1.0), (1.0, 1.0, 1.0), order=1)
    with pytest.raises(ValueError, match=r"target_spacing .* got \[1.0, 0.0, 1.0\]"):
        resample_to_spacing(image, (1.0, 1.0, 1.0), (1.0, 0.0, 1.0), order=1)
    with pytest.raises(ValueError, match=r"got \(4, 4\)"):
        resample_to_spacing(np.zeros((4, 4)), (1.0,), (1.0,), order=1)
    with pytest.raises(ValueError, match=r"order .* got 7"):
        resample_to_spacing(image, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), order=7)


def test_resize_longest_side_keeps_aspect_ratio() -> None:
    image = np.zeros((3, 100, 50), dtype=np.uint8)
    out = resize_longest_side(image, 32, order=1)
    assert out.shape == (3, 32, 16)
    assert out.dtype == np.float32
    assert resize_longest_side(np.zeros((1, 30, 90)), 60, order=1).shape == (1, 20, 60)


def test_resize_2d_preserves_mask_dtype_and_labels() -> None:
    mask = np.zeros((1, 8, 8), dtype=np.uint8)
    mask[0, :4, :4] = 3
    out = resize_2d(mask, (5, 13), order=0)
    assert out.shape == (1, 5, 13) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 3}


def test_resize_2d_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match=r"size\[1\] to be an integer >= 1, got 0"):
        resize_2d(np.zeros((1, 4, 4)), (4, 0), order=1)


def test_pad_to_square_centres_the_image() -> None:
    image = np.ones((1, 2, 6), dtype=np.float32)
    out = pad_to_square(image, fill=-1.0)
    assert out.shape == (1, 6, 6) and out.dtype == np.float32
    # Two rows above, two below: the content sits in rows 2 and 3.
    np.testing.assert_array_equal(np.flatnonzero(out[0, :, 0] == 1.0), [2, 3])
    assert np.all(out[0, :2] == -1.0) and np.all(out[0, 4:] == -1.0)


def test_pad_to_square_odd_difference_puts_extra_pixel_right() -> None:
    out = pad_to_square(np.ones((1, 4, 1), dtype=np.uint8), fill=0)
    np.testing.assert_array_equal(out[0, 0], [0, 1, 0, 0])


def test_pad_to_square_rejects_unrepresentable_fill() -> None:
    with pytest.raises(ValueError, match=r"\[0, 255\] for dtype uint8, got -1"):
        pad_to_square(np.zeros((1, 2, 3), dtype=np.uint8), fill=-1)


def test_geometry_does_not_mutate_inputs() -> None:
    image = np.random.default_rng(1).normal(size=(1, 6, 9)).astype(np.float32)
    original = image.copy()
    resample_to_spacing(image, (1.0, 1.0), (0.5, 2.0), order=1)
    resize_longest_side(image, 4, order=1)
    resize_2d(image, (3, 3), order=0)
    pad_to_square(image, fill=0.0)
    np.testing.assert_array_equal(image, original)
