"""Intensity preparation: CT window, percentile clip, histogram normalisation, [-1, 1] scaling.

Every function takes an array of any shape (a ``(C, H, W)`` image or a ``(C, X, Y, Z)``
volume in practice), never modifies it, and returns float32. Optional masks select the
voxels that statistics are computed over (usually the foreground, so that the air around a
patient does not dominate percentiles or histograms); the operation itself is applied to
every voxel. A mask has the shape of ``x``, or that shape with a leading axis of 1 (one
foreground mask shared by all channels), and is bool or an integer label array (non-zero =
selected).

`apply_intensity` chains the steps in the order fixed by `IntensitySpec`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
exposure = lazy_import("skimage.exposure")
filters = lazy_import("skimage.filters")

HISTOGRAM_METHODS: tuple[str, ...] = ("none", "equalize", "zscore")
# Foreground thresholds computed from each image instead of given as a number. "triangle": Zack
# et al. 1977 (scikit-image ``threshold_triangle``), made for a histogram with one dominant peak
# at one end, as an MR image's background noise is. On the sample cohort's 12 raw NIfTI MR
# volumes, against their tissue label maps: the number 0 counts about half of the background noise
# as foreground (Dice 0.68-0.74; every one of 81 axial slices has >= 10% "foreground"); "triangle"
# gives Dice 0.93-0.97 and misses at most 0.12% of the tissue, where Otsu's threshold (Dice
# 0.96-0.98) misses 3.6-8.2% of it, dark CSF first. It needs a background to find: on a crop that
# is tissue to its edges (pydicom's MR_small.dcm) it keeps 31% of the pixels (README, "Your own data").
FOREGROUND_METHODS: tuple[str, ...] = ("triangle",)


def _as_float32(x: ArrayLike, name: str) -> NDArray[np.float32]:
    """``x`` as a non-empty, finite float32 array (no copy when it already is one)."""
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"Expected {name} to be a real numeric array, got dtype {array.dtype}.")
    if array.size == 0:
        raise ValueError(f"Expected {name} to have at least one element, got shape {array.shape}.")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(
            f"Expected {name} to contain only finite values, got "
            f"{int(np.count_nonzero(~np.isfinite(array)))} NaN or infinite values."
        )
    return array


def _finite_number(value: Any, name: str) -> float:
    """``value`` as a float, rejecting bools, non-numbers, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"Expected {name} to be a finite number, got {value!r}.")
    return float(value)


def _selection(mask: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_] | None:
    """Broadcast ``mask`` to ``shape`` as bool, or None when no mask is given."""
    if mask is None:
        return None
    selected = np.asarray(mask)
    if selected.dtype.kind not in "biu":
        raise ValueError(
            f"Expected mask to be a bool or integer array, got dtype {selected.dtype}."
        )
    shared = (1, *shape[1:])
    if selected.shape != shape and selected.shape != shared:
        raise ValueError(
            f"Expected mask with shape {shape} or {shared}, got {selected.shape}."
        )
    return np.broadcast_to(selected != 0, shape)


def _selected_values(values: NDArray[np.float32], mask: ArrayLike | None) -> NDArray[np.float32]:
    """The values under ``mask`` (all values when None); an empty selection is an error."""
    selection = _selection(mask, values.shape)
    if selection is None:
        return values.ravel()
    selected = values[selection]
    if selected.size == 0:
        raise ValueError(
            f"Expected mask to select at least one voxel, got an empty mask of shape "
            f"{np.shape(mask)}."
        )
    return selected


def window(x: ArrayLike, low: float, high: float) -> NDArray[np.float32]:
    """Clip ``x`` to the intensity window ``[low, high]`` (CT windowing in HU).

    Args:
        x: array of any shape, real dtype, finite values (e.g. ``(1, X, Y, Z)`` int16 HU).
        low: lower window bound, e.g. -1000.0 (air) for a lung window.
        high: upper window bound; must be greater than ``low``.

    Returns:
        float32 array of ``x``'s shape with values in ``[low, high]``.

    Raises:
        ValueError: ``low >= high``, a bound is not a finite number, or ``x`` is empty,
            non-numeric or not finite.
    """
    low_value = _finite_number(low, "low")
    high_value = _finite_number(high, "high")
    if low_value >= high_value:
        raise ValueError(
            f"Expected low < high for the window, got low={low_value}, high={high_value}."
        )
    values = _as_float32(x, "x")
    return np.clip(values, low_value, high_value).astype(np.float32, copy=False)


def clip_percentiles(
    x: ArrayLike,
    low_pct: float,
    high_pct: float,
    mask: ArrayLike | None = None,
) -> tuple[NDArray[np.float32], tuple[float, float]]:
    """Clip ``x`` to its ``low_pct`` and ``high_pct`` percentiles, computed under ``mask``.

    Percentiles use numpy's default linear interpolation. Only the statistics are
    restricted to the mask: every voxel of ``x`` is clipped, so background below the lower
    percentile becomes ``lo``.

    Args:
        x: array of any shape, real dtype, finite values.
        low_pct: lower percentile in ``[0, 100)``.
        high_pct: upper percentile in ``(low_pct, 100]``.
        mask: voxels to compute the percentiles over, shape of ``x`` or ``(1, *x.shape[1:])``
            (shared by all channels); bool or integer (non-zero = selected). None: all voxels.

    Returns:
        ``(clipped, (lo, hi))``: float32 array of ``x``'s shape with values in ``[lo, hi]``,
        and the two percentile values as floats.

    Raises:
        ValueError: percentiles outside ``0 <= low_pct < high_pct <= 100``, a mask of the
            wrong shape or dtype, or a mask that selects no voxel.
    """
    low_value = _finite_number(low_pct, "low_pct")
    high_value = _finite_number(high_pct, "high_pct")
    if not 0.0 <= low_value < high_value <= 100.0:
        raise ValueError(
            "Expected percentiles with 0 <= low_pct < high_pct <= 100, got "
            f"low_pct={low_value}, high_pct={high_value}."
        )
    values = _as_float32(x, "x")
    selected = _selected_values(values, mask)
    lo, hi = (float(p) for p in np.percentile(selected, [low_value, high_value]))
    return np.clip(values, lo, hi).astype(np.float32, copy=False), (lo, hi)


def normalise_histogram(
    x: ArrayLike, method: str, mask: ArrayLike | None = None
) -> NDArray[np.float32]:
    """Normalise the intensity distribution of ``x`` with statistics taken under ``mask``.

    Methods:
        ``"none"``: ``x`` unchanged (as float32; the mask is only validated).
        ``"equalize"``: histogram equalisation, ``skimage.exposure.equalize_hist`` (256 bins,
            its default) with the CDF built from the masked voxels and applied to all voxels.
            Values in ``(0, 1]``.
        ``"zscore"``: ``(x - mean) / std`` with mean and (population) std over the masked
            voxels. A constant selection has std 0; then only the mean is subtracted, so a
            featureless image stays constant instead of becoming NaN.

    Args:
        x: array of any shape, real dtype, finite values.
        method: one of ``HISTOGRAM_METHODS``.
        mask: voxels to compute the statistics over, shape of ``x`` or
            ``(1, *x.shape[1:])``; bool or integer (non-zero = selected). None: all voxels.

    Returns:
        float32 array of ``x``'s shape.

    Raises:
        ValueError: an unknown method (the message lists the valid ones), a mask of the
            wrong shape or dtype, or (for ``"equalize"`` and ``"zscore"``) a mask that
            selects no voxel.
    """
    if method not in HISTOGRAM_METHODS:
        raise ValueError(
            f"Expected method to be one of {list(HISTOGRAM_METHODS)}, got {method!r}."
        )
    values = _as_float32(x, "x")
    if method == "none":
        _selection(mask, values.shape)
        return values.copy()
    selected = _selected_values(values, mask)
    if method == "equalize":
        equalised = exposure.equalize_hist(values, mask=_selection(mask, values.shape))
        return equalised.astype(np.float32, copy=False)
    # float64 accumulators: a float32 sum over ~10^8 voxels loses several digits.
    mean = float(selected.mean(dtype=np.float64))
    std = float(selected.std(dtype=np.float64))
    scale = std if std > 0.0 else 1.0
    return ((values - np.float32(mean)) / np.float32(scale)).astype(np.float32, copy=False)


def scale_to_unit(
    x: ArrayLike, lo: float | None = None, hi: float | None = None
) -> NDArray[np.float32]:
    """Map ``[lo, hi]`` linearly onto ``[-1, 1]`` and clip everything outside.

    Args:
        x: array of any shape, real dtype, finite values.
        lo: intensity mapped to -1; default ``x.min()``.
        hi: intensity mapped to +1; default ``x.max()``.

    Returns:
        float32 array of ``x``'s shape in ``[-1, 1]``; ``lo`` maps to exactly -1.0 and
        ``hi`` to exactly 1.0. When ``lo == hi`` (a constant input with default bounds, or
        a zero-width range) every value is -1.0: an image without contrast carries no
        structure, and -1 is the value of empty background after scaling, so it is treated
        as background rather than dividing by zero.

    Raises:
        ValueError: ``lo > hi`` (after filling in defaults), or a bound is not finite.
    """
    values = _as_float32(x, "x")
    low_value = float(values.min()) if lo is None else _finite_number(lo, "lo")
    high_value = float(values.max()) if hi is None else _finite_number(hi, "hi")
    if low_value > high_value:
        low_source = "x.min()" if lo is None else "given"
        high_source = "x.max()" if hi is None else "given"
        raise ValueError(
            f"Expected lo <= hi, got lo={low_value} ({low_source}) and "
            f"hi={high_value} ({high_source})."
        )
    # The span is computed in float32 like the numerator, so hi maps to exactly 1.0.
    low32, span32 = np.float32(low_value), np.float32(high_value) - np.float32(low_value)
    if span32 <= 0:
        return np.full(values.shape, -1.0, dtype=np.float32)
    scaled = (values - low32) / span32 * np.float32(2.0) - np.float32(1.0)
    return np.clip(scaled, -1.0, 1.0).astype(np.float32, copy=False)


def foreground_mask(x: ArrayLike, threshold: float | str) -> NDArray[np.bool_]:
    """Foreground as ``x > threshold`` (the "non-zero threshold" rule with threshold 0).

    Args:
        x: array of any shape, real dtype.
        threshold: intensity in the units of ``x`` (raw HU or scanner units, not scaled), or
            one of ``FOREGROUND_METHODS`` to compute it from ``x``'s finite values (an image
            with a single value then has no foreground).

    Returns:
        bool array of ``x``'s shape, True where ``x > threshold`` (NaN is background).
    """
    threshold = _threshold(threshold, "threshold")
    values = np.asarray(x)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"Expected x to be a real numeric array, got dtype {values.dtype}.")
    if isinstance(threshold, str):  # "triangle", the one method
        finite = values[np.isfinite(values)]
        if finite.size == 0 or finite.min() == finite.max():
            return np.zeros(values.shape, dtype=bool)
        return values > float(filters.threshold_triangle(finite))
    return values > threshold


def _threshold(value: Any, name: str) -> float | str:
    """A foreground threshold: one of ``FOREGROUND_METHODS``, else a finite number (as a float)."""
    if isinstance(value, str):
        if value not in FOREGROUND_METHODS:
            raise ValueError(f"Expected foreground_threshold to be a number or one of {list(FOREGROUND_METHODS)}, "
                             f"got {value!r}.")
        return value
    return _finite_number(value, name)


def _pair(value: Any, name: str) -> tuple[float, float] | None:
    """A two-element sequence (a YAML list) as a tuple of two finite floats; None passes."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"Expected {name} to be None or a pair [low, high], got {value!r}.")
    return (_finite_number(value[0], f"{name}[0]"), _finite_number(value[1], f"{name}[1]"))


@dataclass(frozen=True)
class IntensitySpec:
    """How raw intensities become model inputs; built from ``params:`` with `from_params`.

    Attributes:
        window_hu: ``(low, high)`` CT window in HU applied first, or None (MR, photos).
        clip_percentiles: ``(low_pct, high_pct)`` percentiles of the foreground to clip to
            after windowing, or None.
        histogram: one of ``HISTOGRAM_METHODS``.
        foreground_threshold: raw-intensity threshold; foreground is channel mean > it.
            Or ``"triangle"``: the threshold computed per image (``FOREGROUND_METHODS``), for
            MR whose background noise lies above any fixed number.
    """

    window_hu: tuple[float, float] | None
    clip_percentiles: tuple[float, float] | None
    histogram: str = "none"
    foreground_threshold: float | Literal["triangle"] = 0.0

    def __post_init__(self) -> None:
        # Frozen: normalise YAML lists to tuples through object.__setattr__.
        window_hu = _pair(self.window_hu, "window_hu")
        if window_hu is not None and window_hu[0] >= window_hu[1]:
            raise ValueError(
                f"Expected window_hu with low < high, got {list(window_hu)}."
            )
        percentiles = _pair(self.clip_percentiles, "clip_percentiles")
        if percentiles is not None and not 0.0 <= percentiles[0] < percentiles[1] <= 100.0:
            raise ValueError(
                "Expected clip_percentiles [low_pct, high_pct] with "
                f"0 <= low_pct < high_pct <= 100, got {list(percentiles)}."
            )
        if self.histogram not in HISTOGRAM_METHODS:
            raise ValueError(
                f"Expected histogram to be one of {list(HISTOGRAM_METHODS)}, "
                f"got {self.histogram!r}."
            )
        threshold = _threshold(self.foreground_threshold, "foreground_threshold")
        object.__setattr__(self, "window_hu", window_hu)
        object.__setattr__(self, "clip_percentiles", percentiles)
        object.__setattr__(self, "foreground_threshold", threshold)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> IntensitySpec:
        """Build from a ``params:`` mapping; unknown and missing keys fail, naming them."""
        return from_params(cls, params, "preprocessing.intensity")


def apply_intensity(
    x: ArrayLike, spec: IntensitySpec
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Turn raw intensities into ``[-1, 1]`` model inputs, following ``spec``.

    Order: foreground from raw ``x`` -> `window` (if ``window_hu``) -> `clip_percentiles`
    over the foreground (if set) -> `normalise_histogram` over the foreground ->
    `scale_to_unit`. Statistics are joint over channels; the foreground is
    ``channel mean > foreground_threshold``, shared by all channels.

    The range mapped to [-1, 1] is a fixed one where the steps define it, so that the same
    tissue gets the same value in every image: with ``histogram == "none"`` it is the
    percentile bounds if clipping is set, else the window if set. Otherwise (no window or
    clip, or any histogram method) it is the min and max of the normalised image.

    Args:
        x: ``(C, H, W)`` image or ``(C, X, Y, Z)`` volume, real dtype, finite, raw units.
        spec: the intensity steps.

    Returns:
        ``(scaled, foreground)``: ``x``'s shape float32 in ``[-1, 1]``, and the
        ``(1, *x.shape[1:])`` bool foreground.

    Raises:
        ValueError: ``x`` is not 3D or 4D, or the foreground is empty while clipping or a
            histogram method needs foreground statistics.
    """
    values = _as_float32(x, "x")
    if values.ndim not in (3, 4):
        raise ValueError(
            f"Expected x with shape (C, H, W) or (C, X, Y, Z), got {values.shape}."
        )
    foreground = foreground_mask(values.mean(axis=0, keepdims=True), spec.foreground_threshold)
    needs_foreground = spec.clip_percentiles is not None or spec.histogram != "none"
    if needs_foreground and not foreground.any():
        raise ValueError(
            f"Expected a non-empty foreground, got none: no voxel of the channel mean is > "
            f"foreground_threshold={spec.foreground_threshold} (max is "
            f"{float(values.mean(axis=0).max())}); clip_percentiles and histogram="
            f"{spec.histogram!r} need foreground statistics."
        )
    lo: float | None = None
    hi: float | None = None
    out = values
    if spec.window_hu is not None:
        lo, hi = spec.window_hu
        out = window(out, lo, hi)
    if spec.clip_percentiles is not None:
        out, (lo, hi) = clip_percentiles(out, *spec.clip_percentiles, mask=foreground)
    if spec.histogram != "none":
        out = normalise_histogram(out, spec.histogram, mask=foreground)
        lo = hi = None
    return scale_to_unit(out, lo, hi), foreground
