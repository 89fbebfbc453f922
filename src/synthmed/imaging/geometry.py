"""Geometry: resampling to a voxel spacing, resizing and square padding.

Arrays are channel-first: ``(C, H, W)`` images and ``(C, X, Y, Z)`` volumes, spacings in
mm per spatial axis in the same order. ``order`` is the spline order of the interpolation,
with two intended uses:

* ``order=0`` (nearest neighbour) for integer label masks: the dtype is kept, no
  anti-aliasing filter is applied and no new label value can appear. Labels thinner than
  one output voxel can disappear when downsampling.
* ``order=1`` (linear, or up to 5) for images: the result is float32, and a Gaussian
  anti-aliasing filter (scikit-image's ``sigma = (factor - 1) / 2`` per axis) is applied
  when any axis is downsampled.

Resampling uses ``skimage.transform.resize``, which keeps the physical extent of the array
(pixel-area alignment: the outer edges of the first and last voxels stay in place), so the
achieved spacing is ``extent / new_shape``. Borders are extended with ``mode="edge"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from synthmed.core.lazy import lazy_import

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
transform = lazy_import("skimage.transform")

MAX_SPLINE_ORDER = 5  # scipy.ndimage supports spline orders 0-5.


def _check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools and floats are rejected."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_order(order: Any) -> int:
    if (
        isinstance(order, bool)
        or not isinstance(order, Integral)
        or not 0 <= order <= MAX_SPLINE_ORDER
    ):
        raise ValueError(
            f"Expected order to be an integer in [0, {MAX_SPLINE_ORDER}] "
            f"(0 for masks, 1 for images), got {order!r}."
        )
    return int(order)


def _check_image(image: ArrayLike) -> np.ndarray:
    """``image`` as a non-empty ``(C, H, W)`` real array."""
    array = np.asarray(image)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"Expected an image with shape (C, H, W), got {array.shape}.")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"Expected a real numeric image, got dtype {array.dtype}.")
    return array


def _check_spacing(spacing: Any, name: str, n_axes: int) -> tuple[float, ...]:
    """``spacing`` as a tuple of ``n_axes`` finite positive floats (mm)."""
    if isinstance(spacing, (str, bytes)) or not isinstance(spacing, (Sequence, np.ndarray)):
        raise ValueError(
            f"Expected {name} to be a sequence of {n_axes} spacings in mm, got {spacing!r}."
        )
    values = tuple(spacing)
    if len(values) != n_axes:
        raise ValueError(
            f"Expected {name} with {n_axes} values (one per spatial axis), got "
            f"{len(values)}: {list(values)}."
        )
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, Real)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(
                f"Expected {name} to hold finite positive spacings in mm, got {list(values)}."
            )
    return tuple(float(value) for value in values)


def _round_half_up(value: float) -> int:
    # Python's round() rounds halves to even; a size of 2.5 px should not become 2.
    return int(math.floor(value + 0.5))


def _resize_channels(array: np.ndarray, spatial_shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resize each channel of ``(C, *spatial)`` to ``spatial_shape`` (see module docstring)."""
    if order == 0:
        channels = [
            transform.resize(
                channel, spatial_shape, order=0, mode="edge",
                preserve_range=True, anti_aliasing=False,
            )
            for channel in array
        ]
        return np.stack(channels).astype(array.dtype, copy=False)
    downsampling = any(new < old for new, old in zip(spatial_shape, array.shape[1:]))
    # float32 in gives float32 out from skimage (>= 0.19), halving memory for volumes.
    source = array.astype(np.float32, copy=False)
    channels = [
        transform.resize(
            channel, spatial_shape, order=order, mode="edge",
            preserve_range=True, anti_aliasing=downsampling,
        )
        for channel in source
    ]
    return np.stack(channels).astype(np.float32, copy=False)


def resample_to_spacing(
    array: ArrayLike,
    spacing: Sequence[float],
    target_spacing: Sequence[float] | None,
    *,
    order: int,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample ``array`` from ``spacing`` to (as close as possible to) ``target_spacing``.

    The new size of each axis is ``round(size * spacing / target)`` (halves up, at least 1);
    because sizes are whole voxels, the achieved spacing ``size * spacing / new_size`` can
    differ slightly from the target, and it is what is returned.

    Args:
        array: ``(C, H, W)`` or ``(C, X, Y, Z)`` real array; an image, or a uint8 label
            mask with ``order=0``.
        spacing: current spacing in mm, one value per spatial axis.
        target_spacing: wanted spacing in mm per spatial axis, or None to keep ``array``
            (returned as is, not copied) and ``spacing``.
        order: spline order; 0 for masks (dtype kept), 1 for images (float32 result).

    Returns:
        ``(resampled, new_spacing)``: ``(C, *new_spatial)`` array (float32 for ``order >= 1``,
        ``array``'s dtype for ``order == 0``) and the achieved spacing in mm as floats.

    Raises:
        ValueError: ``array`` is not 3D or 4D, a spacing has the wrong length or a value
            that is not finite and positive, or ``order`` is not in [0, 5].
    """
    values = np.asarray(array)
    if values.ndim not in (3, 4) or 0 in values.shape:
        raise ValueError(
            f"Expected array with shape (C, H, W) or (C, X, Y, Z), got {values.shape}."
        )
    if values.dtype.kind not in "biuf":
        raise ValueError(f"Expected a real numeric array, got dtype {values.dtype}.")
    order = _check_order(order)
    n_axes = values.ndim - 1
    current = _check_spacing(spacing, "spacing", n_axes)
    if target_spacing is None:
        return values, current
    target = _check_spacing(target_spacing, "target_spacing", n_axes)
    extent = [size * step for size, step in zip(values.shape[1:], current)]
    new_shape = tuple(
        max(1, _round_half_up(length / step)) for length, step in zip(extent, target)
    )
    new_spacing = tuple(length / size for length, size in zip(extent, new_shape))
    return _resize_channels(values, new_shape, order), new_spacing


def resize_2d(image: ArrayLike, size: Sequence[int], *, order: int) -> np.ndarray:
    """Resize a ``(C, H, W)`` image to ``(C, h, w)`` without keeping the aspect ratio.

    Args:
        image: ``(C, H, W)`` real array.
        size: ``(h, w)`` in pixels, each >= 1.
        order: 0 for label masks (dtype kept, no anti-aliasing), >= 1 for images.

    Returns:
        ``(C, h, w)``: ``image``'s dtype for ``order == 0``, float32 otherwise (values in the
        input's range: scikit-image clips spline overshoot).

    Raises:
        ValueError: ``image`` is not ``(C, H, W)``, ``size`` is not two integers >= 1, or
            ``order`` is not in [0, 5].
    """
    array = _check_image(image)
    order = _check_order(order)
    if (
        isinstance(size, (str, bytes))
        or not isinstance(size, (Sequence, np.ndarray))
        or len(size) != 2
    ):
        raise ValueError(f"Expected size to be (h, w), got {size!r}.")
    new_shape = (_check_int(size[0], "size[0]", 1), _check_int(size[1], "size[1]", 1))
    return _resize_channels(array, new_shape, order)


def resize_longest_side(image: ArrayLike, size_px: int, *, order: int) -> np.ndarray:
    """Resize a ``(C, H, W)`` image so that its longest side is ``size_px``, keeping aspect.

    The shorter side becomes ``round(short * size_px / long)`` (halves up, at least 1).

    Args:
        image: ``(C, H, W)`` real array.
        size_px: length of the longest side after resizing, >= 1.
        order: 0 for label masks (dtype kept), >= 1 for images (float32).

    Returns:
        ``(C, H', W')`` with ``max(H', W') == size_px``.

    Raises:
        ValueError: as `resize_2d`, or ``size_px`` is not an integer >= 1.
    """
    array = _check_image(image)
    size_px = _check_int(size_px, "size_px", 1)
    height, width = array.shape[1:]
    longest = max(height, width)
    new_size = (
        max(1, _round_half_up(height * size_px / longest)),
        max(1, _round_half_up(width * size_px / longest)),
    )
    return resize_2d(array, new_size, order=order)


def pad_to_square(image: ArrayLike, fill: float) -> np.ndarray:
    """Pad a ``(C, H, W)`` image with ``fill`` to ``(C, S, S)``, ``S = max(H, W)``, centred.

    When the difference is odd, the extra row or column goes at the bottom or right.

    Args:
        image: ``(C, H, W)`` real array.
        fill: padding value, representable in ``image``'s dtype (e.g. -1.0 for images in
            [-1, 1], 0 for masks).

    Returns:
        ``(C, S, S)`` array of ``image``'s dtype; a copy even when already square.

    Raises:
        ValueError: ``image`` is not ``(C, H, W)``, or ``fill`` is not finite or not
            representable in ``image``'s dtype (e.g. -1 or 0.5 for uint8).
    """
    array = _check_image(image)
    if isinstance(fill, bool) or not isinstance(fill, Real) or not math.isfinite(fill):
        raise ValueError(f"Expected fill to be a finite number, got {fill!r}.")
    if array.dtype.kind in "biu":
        if array.dtype.kind == "b":
            low, high = 0, 1
        else:
            low, high = int(np.iinfo(array.dtype).min), int(np.iinfo(array.dtype).max)
        if fill != int(fill) or not low <= fill <= high:
            raise ValueError(
                f"Expected fill to be an integer in [{low}, {high}] for dtype {array.dtype}, "
                f"got {fill!r}."
            )
    height, width = array.shape[1:]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    pad = ((0, 0), (top, side - height - top), (left, side - width - left))
    return np.pad(array, pad, mode="constant", constant_values=fill)
