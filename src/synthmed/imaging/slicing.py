"""Slicing volumes into display-oriented 2D images, and choosing patches from 2D images.

Volumes are ``(C, X, Y, Z)`` in closest-canonical RAS+ order (nibabel's
``as_closest_canonical``): axis 1 increases towards the patient's Right, axis 2 towards
Anterior, axis 3 towards Superior. Slices are ``(C, H, W)`` with row 0 at the top.

Display orientation follows nilearn's default plots: each 2D cut is rotated 90 degrees
counter-clockwise with ``np.rot90``, exactly as nilearn's
``nilearn/plotting/displays/_axes.py`` ``CutAxes.transform_to_2d`` does before ``imshow``:

* axial (z fixed): top row = most anterior (max y); columns run x ascending, so the
  patient's left is on the image's left ("neurological" convention, nilearn's default).
* coronal (y fixed): top row = most superior (max z); columns x ascending, left on left.
* sagittal (x fixed): top row = most superior (max z); columns y ascending, so anterior
  (the face) is on the image's RIGHT.

``radiological=True`` mirrors the columns of every plane, as nilearn's
``plot_img(radiological=True)`` inverts the horizontal axis of every cut (sagittal
included): the patient's left is then on the image's right, and sagittal anterior on the left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from synthmed.core.config import from_params
from synthmed.imaging.geometry import pad_to_square, resize_2d

# Index among the three spatial axes of (C, X, Y, Z): the axis a slice of that plane fixes.
PLANES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
PATCH_CLASSES: tuple[str, ...] = ("structure", "normal")


def _check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools and floats are rejected."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_plane(plane: Any) -> int:
    if not isinstance(plane, str) or plane not in PLANES:
        raise ValueError(f"Expected plane to be one of {list(PLANES)}, got {plane!r}.")
    return PLANES[plane]


def _check_binary_2d(array: ArrayLike, name: str) -> NDArray[np.bool_]:
    """A 2D bool or integer array as bool (non-zero = True)."""
    values = np.asarray(array)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"Expected {name} with shape (H, W), got {values.shape}.")
    if values.dtype.kind not in "biu":
        raise ValueError(
            f"Expected {name} to be a bool or integer array, got dtype {values.dtype}."
        )
    return values != 0


def plane_length(volume_shape: Sequence[int], plane: str) -> int:
    """Number of slices of ``plane`` in a volume of shape ``(C, X, Y, Z)``.

    Args:
        volume_shape: the full ``(C, X, Y, Z)`` shape, e.g. ``volume.shape``.
        plane: one of ``PLANES``.

    Returns:
        The size of the spatial axis the plane fixes (X for sagittal, Y coronal, Z axial).
    """
    axis = _check_plane(plane)
    shape = tuple(volume_shape)
    if len(shape) != 4:
        raise ValueError(f"Expected volume_shape (C, X, Y, Z), got {shape}.")
    return _check_int(shape[1 + axis], f"volume_shape[{1 + axis}]", 0)


def volume_slice(
    volume: ArrayLike, plane: str, index: int, *, radiological: bool = False
) -> np.ndarray:
    """One slice of a ``(C, X, Y, Z)`` RAS+ volume as a display-oriented ``(C, H, W)`` image.

    See the module docstring for the orientation of each plane (nilearn's default view).

    Args:
        volume: ``(C, X, Y, Z)`` array in closest-canonical RAS+ axis order, any dtype.
        plane: ``"sagittal"`` (fixes x), ``"coronal"`` (fixes y) or ``"axial"`` (fixes z).
        index: voxel index along the fixed axis, in ``[0, plane_length(volume.shape, plane))``.
        radiological: mirror the columns (patient's left on the image's right).

    Returns:
        A contiguous copy of ``volume``'s dtype: axial ``(C, Y, X)``, coronal ``(C, Z, X)``,
        sagittal ``(C, Z, Y)``.

    Raises:
        ValueError: ``volume`` is not 4D, ``plane`` is unknown (the message lists the valid
            planes) or ``index`` is out of range.
    """
    array = np.asarray(volume)
    if array.ndim != 4:
        raise ValueError(f"Expected a volume with shape (C, X, Y, Z), got {array.shape}.")
    axis = _check_plane(plane)
    length = array.shape[1 + axis]
    if isinstance(index, bool) or not isinstance(index, Integral) or not 0 <= index < length:
        raise ValueError(
            f"Expected index in [0, {length}) for the {plane} plane of a volume with shape "
            f"{array.shape}, got {index!r}."
        )
    cut = np.take(array, int(index), axis=1 + axis)  # (C, A, B), A and B ascending
    # rot90 (counter-clockwise) puts the last axis B, descending, on the rows and A,
    # ascending, on the columns: nilearn's CutAxes.transform_to_2d.
    oriented = np.rot90(cut, k=1, axes=(1, 2))
    if radiological:
        oriented = oriented[:, :, ::-1]
    return np.ascontiguousarray(oriented)


def foreground_fraction(mask: ArrayLike) -> float:
    """Fraction of ``mask`` elements that are True / non-zero, in ``[0, 1]``.

    Raises:
        ValueError: ``mask`` is empty or not bool / integer.
    """
    values = np.asarray(mask)
    if values.size == 0:
        raise ValueError(f"Expected a non-empty mask, got shape {values.shape}.")
    if values.dtype.kind not in "biu":
        raise ValueError(
            f"Expected mask to be a bool or integer array, got dtype {values.dtype}."
        )
    return float(np.count_nonzero(values)) / values.size


def slice_indices(start: int, stop: int, keep_every: int) -> list[int]:
    """Slice indices ``start, start + keep_every, ...`` below ``stop``.

    Args:
        start: first index, >= 0.
        stop: exclusive end, >= ``start`` (``start == stop`` gives an empty list).
        keep_every: step, >= 1 (1 keeps every slice).

    Returns:
        ``list(range(start, stop, keep_every))``.
    """
    start = _check_int(start, "start", 0)
    stop = _check_int(stop, "stop", 0)
    keep_every = _check_int(keep_every, "keep_every", 1)
    if stop < start:
        raise ValueError(f"Expected start <= stop, got start={start}, stop={stop}.")
    return list(range(start, stop, keep_every))


def to_square(image: ArrayLike, size_px: int, *, fill: float, order: int) -> np.ndarray:
    """Pad a ``(C, H, W)`` image to a centred square with ``fill``, then resize it.

    Args:
        image: ``(C, H, W)`` real array.
        size_px: output side in pixels, >= 1.
        fill: padding value in ``image``'s units (e.g. -1.0 for [-1, 1] images, 0 for masks).
        order: 0 for label masks (dtype kept), >= 1 for images (float32).

    Returns:
        ``(C, size_px, size_px)``; see `geometry.pad_to_square` and `geometry.resize_2d`.
    """
    size_px = _check_int(size_px, "size_px", 1)
    return resize_2d(pad_to_square(image, fill), (size_px, size_px), order=order)


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected {name} to be a number in [0, 1], got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class PatchSpec:
    """How `select_patches` tiles and classifies square patches; build with `from_params`.

    Attributes:
        patch_px: patch side in pixels, >= 1.
        stride_px: grid step between candidate top-left corners, >= 1.
        structure_min_fraction: a patch whose mask fraction is >= this is "structure".
        normal_max_fraction: a patch whose mask fraction is <= this (and that has enough
            foreground) is "normal"; must be < ``structure_min_fraction`` so the classes
            are disjoint.
        foreground_min_fraction: minimum foreground fraction of a "normal" patch, so that
            empty background is not sampled as normal anatomy.
        max_per_class: at most this many patches of each class per image, >= 1.
    """

    patch_px: int
    stride_px: int
    structure_min_fraction: float
    normal_max_fraction: float
    foreground_min_fraction: float
    max_per_class: int

    def __post_init__(self) -> None:
        _check_int(self.patch_px, "patch_px", 1)
        _check_int(self.stride_px, "stride_px", 1)
        _check_int(self.max_per_class, "max_per_class", 1)
        structure = _fraction(self.structure_min_fraction, "structure_min_fraction")
        normal = _fraction(self.normal_max_fraction, "normal_max_fraction")
        _fraction(self.foreground_min_fraction, "foreground_min_fraction")
        if not normal < structure:
            raise ValueError(
                "Expected normal_max_fraction < structure_min_fraction so that no patch is "
                f"both, got normal_max_fraction={normal}, structure_min_fraction={structure}."
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PatchSpec:
        """Build from a ``params:`` mapping; unknown and missing keys fail, naming them."""
        return from_params(cls, params, "extraction.patches.patch")


def _window_sums(
    binary: NDArray[np.bool_], rows: np.ndarray, cols: np.ndarray, size: int
) -> np.ndarray:
    """Count of True pixels in every ``size`` x ``size`` window with top-left ``(rows x cols)``.

    Summed-area table (Crow 1984): one cumulative sum, then four lookups per window, so
    the cost does not depend on the patch size.
    """
    table = np.zeros((binary.shape[0] + 1, binary.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = binary.cumsum(axis=0, dtype=np.int64).cumsum(axis=1)
    top, left = rows[:, None], cols[None, :]
    bottom, right = top + size, left + size
    return table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]


def select_patches(
    mask: ArrayLike,
    foreground: ArrayLike,
    spec: PatchSpec,
    rng: np.random.Generator,
    row_range: tuple[int, int] | None = None,
) -> list[tuple[int, int, str]]:
    """Choose "structure" and "normal" patches on a strided grid of a 2D image.

    Candidates are the top-left corners ``(r0 + i * stride_px, j * stride_px)`` whose whole
    ``patch_px`` square lies inside the rows ``[r0, r1)`` and the image. Each candidate is
    "structure" if its mask fraction is >= ``structure_min_fraction``, "normal" if its mask
    fraction is <= ``normal_max_fraction`` and its foreground fraction is >=
    ``foreground_min_fraction``, and discarded otherwise. Per class, at most
    ``max_per_class`` candidates are drawn with ``rng`` without replacement (structure
    first, then normal, so a seed gives the same patches).

    Args:
        mask: ``(H, W)`` bool or integer structure mask (non-zero = structure).
        foreground: ``(H, W)`` bool or integer foreground (non-zero = inside the body).
        spec: grid and class thresholds.
        rng: source of randomness for the draw.
        row_range: ``(r0, r1)`` rows patches must stay within, ``0 <= r0 < r1 <= H``;
            None means all rows. A range narrower than ``patch_px`` yields no patch.

    Returns:
        ``(row, col, label)`` top-left corners with label in ``PATCH_CLASSES``, sorted by
        ``(row, col)``.

    Raises:
        ValueError: mismatched or non-2D masks, ``patch_px`` larger than the image, an
            invalid ``row_range`` or an ``rng`` that is not a ``numpy.random.Generator``.
    """
    structure = _check_binary_2d(mask, "mask")
    body = _check_binary_2d(foreground, "foreground")
    if body.shape != structure.shape:
        raise ValueError(
            f"Expected foreground with the shape of mask {structure.shape}, got {body.shape}."
        )
    if not isinstance(spec, PatchSpec):
        raise ValueError(f"Expected spec to be a PatchSpec, got {type(spec).__name__}.")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"Expected rng to be a numpy.random.Generator, got {type(rng).__name__}."
        )
    height, width = structure.shape
    size = spec.patch_px
    if size > height or size > width:
        raise ValueError(
            f"Expected patch_px <= the image size {structure.shape}, got patch_px={size}."
        )
    if row_range is None:
        first_row, end_row = 0, height
    else:
        if isinstance(row_range, (str, bytes)) or len(row_range) != 2:
            raise ValueError(f"Expected row_range to be (r0, r1), got {row_range!r}.")
        first_row = _check_int(row_range[0], "row_range[0]", 0)
        end_row = _check_int(row_range[1], "row_range[1]", 0)
        if not first_row < end_row <= height:
            raise ValueError(
                f"Expected row_range (r0, r1) with 0 <= r0 < r1 <= {height}, "
                f"got {tuple(row_range)}."
            )
    rows = np.arange(first_row, end_row - size + 1, spec.stride_px)
    cols = np.arange(0, width - size + 1, spec.stride_px)
    if rows.size == 0:
        return []
    area = float(size * size)
    mask_fraction = _window_sums(structure, rows, cols, size) / area
    body_fraction = _window_sums(body, rows, cols, size) / area
    candidates = {
        "structure": mask_fraction >= spec.structure_min_fraction,
        "normal": (mask_fraction <= spec.normal_max_fraction)
        & (body_fraction >= spec.foreground_min_fraction),
    }
    chosen: list[tuple[int, int, str]] = []
    for label in PATCH_CLASSES:
        # np.nonzero is row-major, so a seed always draws from the same candidate order.
        row_idx, col_idx = np.nonzero(candidates[label])
        count = min(spec.max_per_class, row_idx.size)
        if count == 0:
            continue
        picks = rng.choice(row_idx.size, size=count, replace=False)
        chosen.extend((int(rows[row_idx[i]]), int(cols[col_idx[i]]), label) for i in picks)
    return sorted(chosen, key=lambda patch: (patch[0], patch[1]))


def crop_patch(image: ArrayLike, row: int, col: int, size: int) -> np.ndarray:
    """Copy the ``size`` x ``size`` patch with top-left ``(row, col)`` out of ``(C, H, W)``.

    Returns:
        ``(C, size, size)`` copy of ``image``'s dtype.

    Raises:
        ValueError: ``image`` is not 3D, or the patch is not entirely inside the image.
    """
    array = np.asarray(image)
    if array.ndim != 3:
        raise ValueError(f"Expected an image with shape (C, H, W), got {array.shape}.")
    row = _check_int(row, "row", 0)
    col = _check_int(col, "col", 0)
    size = _check_int(size, "size", 1)
    height, width = array.shape[1:]
    if row + size > height or col + size > width:
        raise ValueError(
            f"Expected the patch at (row={row}, col={col}) of size {size} to fit in an image "
            f"of {height} x {width} pixels, but it ends at ({row + size}, {col + size})."
        )
    return array[:, row : row + size, col : col + size].copy()
