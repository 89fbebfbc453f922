"""The memorisation gate: no synthetic image may be a copy of a training image.

Generative models, diffusion models most of all, reproduce training images, and more so on
small datasets and on 2D slices cut from 3D volumes (Carlini et al. 2023, "Extracting
training data from diffusion models"; Akbar et al.; Dar et al. report up to ~40% of training
data memorised in CT). docs/privacy.md section 3 is the specification; this module implements it
in four parts.

1. Search. Every query image is compared with every reference (training) image under every
   flip in `SearchConfig.flips` and every integer shift ``dx, dy`` in
   ``[-max_shift_px, max_shift_px]`` (`search_transforms`). A transform is named after what
   is done to the *query* to line it up with its neighbour: ``"hflip dx=+1 dy=0"`` means
   "mirror the query left-right, then move it one pixel to the right".
2. Similarity (`nearest_table`). In pixel space, the
   normalised cross-correlation (Pearson correlation over all pixels and channels): each
   image is centred and scaled to unit L2 norm, so the score ignores gain and offset, and
   the scores of a block of queries against all references are one matrix product. In a
   feature space, the cosine similarity of ``embed(query)`` and ``embed(reference)``. Each
   query keeps its best score over transforms and references, the index of that reference
   and the transform. ``pixel_distance = 1 - pixel_similarity`` lies in ``[0, 2]``: 0 for an
   exact copy, 2 for an intensity-inverted copy (``-x``) when the search is off.
3. Threshold (`calibrate_threshold`). Not guessed: a high percentile (99.9 by default) of the
   nearest-neighbour similarity of *held-out* real images (patients not in the training set)
   to the training set. A synthetic image closer to a training image than almost every
   unseen real patient is flagged. With the training images' patient keys (``train_groups``),
   a second search finds each image's nearest image of another patient, and an image whose
   `relative_distance` (to its nearest training image, over that to the other patients) is
   below all but the same small fraction of held-out images' is flagged too: where patients
   look alike, an unseen patient comes as close to some training image as a disguised copy,
   but not far closer to one patient than to all the others. Held-out images that copy a
   training image (a split leak), carry no content (`PlantConfig.min_source_std`) or whose
   foreground fills little of the frame (`GateConfig.min_calibration_foreground`) are left out
   of the calibration: each would set a threshold for every image with anatomy.
4. Self-test (`plant_copies`, `run_gate`, `enforce`). Perturbed copies of training images
   (noise, a crop resized back, flips, a shift, gain and offset jitter) are scored with the
   same thresholds; if fewer than `GateConfig.min_self_test_recall` of them are flagged the
   gate cannot see copies and `enforce` refuses to publish anything.

Border rule for shifts. A shift moves pixels out of the frame and leaves a strip with no
data. The pixel similarity is computed only on the *overlap*, the rectangle where the
shifted query has data; the reference is cut to the same rectangle, and both are centred
and normalised on it. An exact copy that was shifted by ``(dx, dy)`` therefore scores
exactly 1 (up to float rounding) at the inverse shift, whatever its border holds. A feature
network needs a whole image, so ``embed`` receives the shifted query with the empty strip
filled by replicating the edge pixels (`shift_image`).

Limits (measured on the synthetic images of tests/privacy/test_memorisation.py, 32 px).
NCC is invariant to gain and offset, and the search undoes flips and shifts of up to
``max_shift_px``; noise of std 0.05 costs about 0.005 of similarity. A crop resized back is a
zoom (10% for ``crop_fraction=0.9``) plus a translation of up to ``(1 - crop_fraction) / 2``
of the side, which the shift search alone does not undo. On smooth textures (Gaussian-filtered
noise) the held-out threshold is ~0.63 and cropped copies still score >= 0.67, so a search
without zooms passes the default self-test (with little margin). On anatomy-like slices (a
body on air), unrelated patients correlate at ~0.97-0.99 because they share the layout
(threshold ~0.99), and a 10% crop drops a copy to ~0.85-0.98 unless the search holds that zoom
(`SearchConfig.zooms`) at the crop's position (`SearchConfig.zoom_positions`): then the crop is
lined up exactly and only the noise and the resampling remain (on the 20-subject test cohort's
32 px slices, self-test recall 0.83 with central crops only, 0.99 with every crop position;
docs/privacy.md, section 3). Where that is not enough, a crop-robust ``embed`` (a copy-detection
network trained with crop augmentation) can flag in the feature space.

Several processes (a launcher's ``WORLD_SIZE`` > 1: ``synthmed launch --processes N --pipelines
rebalancing``, or any script under torchrun). Every search (held-out calibration, planted
copies, candidates) splits its queries over the processes in contiguous blocks of whole chunks
(``chunk_size`` queries, `_search_shared`); each process searches its block against all the
references and the per-query results are gathered on every process (``synthmed.core.collectives``),
so the tables are those of one process bit for bit. Each process prepares the references itself.

Conventions. Images are ``(N, C, H, W)`` tensors (or arrays) of any real dtype, by
convention float in ``[-1, 1]``; they are converted to float32 before any arithmetic
(uint8 arithmetic wraps around) and the statistics that need it are taken in float64.
Features are ``(N, D)``. Inputs are never modified.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from synthmed.core import collectives, distributed
from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.core.progress import ProgressLog
from synthmed.core.validation import is_int, is_number

if TYPE_CHECKING:
    from torch import Tensor

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

logger = logging.getLogger(__name__)

Embed = Callable[["torch.Tensor"], "torch.Tensor"]
"""A feature network: ``(N, C, H, W)`` float32 images in the input's range -> ``(N, D)``."""

# Flip name -> the tensor dimensions it reverses. "both" (a 180 degree rotation) is not in
# the default search; add it to `SearchConfig.flips` where such copies are plausible.
FLIPS: dict[str, tuple[int, ...]] = {
    "none": (),
    "horizontal": (-1,),
    "vertical": (-2,),
    "both": (-2, -1),
}
_FLIP_LABELS = {"none": "none", "horizontal": "hflip", "vertical": "vflip", "both": "hvflip"}
# Flips that `plant_copies` draws from when it flips a copy.
_PLANT_FLIPS = ("horizontal", "vertical")
ACTIONS: tuple[str, ...] = ("fail", "drop")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
COLUMNS: tuple[str, ...] = (
    "pixel_similarity",
    "pixel_distance",
    "pixel_neighbour",
    "pixel_transform",
    "feature_similarity",
    "feature_neighbour",
    "other_similarity",
    "relative_distance",
)
# An image (or an image's overlap) whose standard deviation is at most this is constant:
# its correlation with anything is undefined and is reported as 0. Images live in [-1, 1],
# where 1e-6 is far below any real structure and far above float64 rounding of a mean.
_CONSTANT_STD = 1e-6
# A feature vector with an L2 norm at most this has no direction: cosine 0 to anything.
_ZERO_FEATURE_NORM = 1e-12
# Planted copies must lie in the image convention [-1, 1]; allow float rounding.
_RANGE_TOLERANCE = 1e-5
# The two-stage search gathers each query's shortlisted references into one block of about
# this many bytes (64 px RGB, shortlist 32: about 40 queries at a time).
_SHORTLIST_BLOCK_BYTES = 64 * 2**20
# Relative distance: a distance to the other patients this small (similarity 1 - 1e-12) is 0.
_RELATIVE_EPSILON = 1e-12
# `foreground_fraction`: a pixel is foreground when it lies this far above its image's minimum
# (0.5% of the [-1, 1] range): on the cohort's 64 px slices this fraction correlates at 0.999 with
# the extraction's own foreground fraction (`foreground_fraction` in the slices' manifest).
_FOREGROUND_TOLERANCE = 0.01


class MemorisationError(ValueError):
    """The memorisation gate blocks publication: copies were found, or its self-test failed."""


# ------------------------------------------------------------------ validation helpers


def _as_images(images: Tensor | ArrayLike, name: str, *, allow_empty: bool = False) -> Tensor:
    """``images`` as a finite ``(N, C, H, W)`` float32 tensor (no copy when it already is one)."""
    if not isinstance(images, torch.Tensor):
        array = np.asarray(images)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"Expected {name} to have a real numeric dtype, got {array.dtype}.")
        images = torch.as_tensor(array)
    tensor = images
    if tensor.is_complex():
        raise ValueError(f"Expected {name} to have a real numeric dtype, got {tensor.dtype}.")
    if tensor.ndim != 4:
        raise ValueError(f"Expected {name} with shape (N, C, H, W), got {tuple(tensor.shape)}.")
    if tensor.shape[0] == 0 and not allow_empty:
        raise ValueError(f"Expected {name} to hold at least one image, got shape {tuple(tensor.shape)}.")
    if min(tensor.shape[1:]) == 0:
        raise ValueError(f"Expected {name} with non-empty C, H and W, got shape {tuple(tensor.shape)}.")
    # Convert first: differences of uint8 pixels wrap around.
    tensor = tensor.detach().to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"Expected {name} to contain only finite values, got {bad} NaN or infinite values.")
    return tensor


def _check_same_geometry(images: Tensor, name: str, references: Tensor, reference_name: str) -> None:
    if images.shape[1:] != references.shape[1:]:
        raise ValueError(
            f"Expected {name} with the (C, H, W) of {reference_name}, {tuple(references.shape[1:])}, "
            f"got shape {tuple(images.shape)}."
        )


def _check_chunk_size(chunk_size: object) -> int:
    if not is_int(chunk_size) or chunk_size < 1:
        raise ValueError(f"Expected chunk_size to be a positive integer, got {chunk_size!r}.")
    return int(chunk_size)


# ------------------------------------------------------------------ 1. search transforms


@dataclass(frozen=True)
class SearchConfig:
    """Which transforms of a query are tried against every reference.

    Attributes:
        flips: flips to try, from ``FLIPS``: "none", "horizontal" (left-right),
            "vertical" (up-down), "both" (180 degree rotation). ``("none",)`` and
            ``max_shift_px=0`` switch the search off.
        zooms: each reference is also searched as crops of these fractions of the side,
            resized back (bilinear, antialiased): a copy that was cropped and enlarged (by a
            generator or by the self-test's planting) is matched at the zoom that undoes it.
            ``(1.0,)`` = no zoom search.
        zoom_positions: crop positions per axis for each zoom below 1: every position when
            there are at most this many (a 29 px crop of a 32 px image has 4), else this many
            evenly spaced from edge to edge (both edges included); 1 = the central crop only.
            A crop has content at its edge that a crop elsewhere lacks, and after resizing its
            offset is a fraction of a pixel that no integer shift undoes: the central crop
            alone, with shifts, matched a 32 px slice's copy cropped at its edge and shifted at
            0.95 against 1.00 at its own position (docs/privacy.md, section 3). References
            searched: training images x the views of `zoom_views` (26 at 32 px with zooms 1.0,
            0.95 and 0.9: the image, 3 x 3 positions of a 30 px crop, 4 x 4 of a 29 px one).
        max_shift_px: integer shifts ``dx, dy`` in ``[-max_shift_px, max_shift_px]`` are
            tried, ``(2 * max_shift_px + 1) ** 2`` per flip. Must leave an overlap of more
            than half of each image side (checked against the image size when used).
        two_stage_above: when more references than this are searched (training images x
            zoom views, `zoom_views`), the search runs in two stages (`shortlist_references`): a shortlist per
            query from compact embeddings, then the exact search on the shortlist only. At
            or below it every query is compared with every reference. 0 = always two stages.
        shortlist: references kept per query by the first stage (over all flips).
        embedding_px: side of the compact embedding: each image average-pooled to
            ``embedding_px x embedding_px`` per channel, centred and scaled to unit norm, so
            the first stage ranks references by the correlation of these thumbnails.
    """

    flips: tuple[str, ...] = ("none", "horizontal", "vertical")
    max_shift_px: int = 2
    zooms: tuple[float, ...] = (1.0,)
    zoom_positions: int = 4
    two_stage_above: int = 20_000
    shortlist: int = 32
    embedding_px: int = 8

    def __post_init__(self) -> None:
        zooms = tuple(self.zooms) if isinstance(self.zooms, (list, tuple)) else self.zooms
        if (not isinstance(zooms, tuple) or not zooms or len(set(zooms)) != len(zooms)
                or any(not is_number(z) or not 0.5 <= float(z) <= 1.0 for z in zooms)):
            raise ValueError(
                f"SearchConfig.zooms must be a non-empty tuple of distinct fractions in [0.5, 1], got {self.zooms!r}."
            )
        object.__setattr__(self, "zooms", tuple(float(z) for z in zooms))
        flips = self.flips
        if isinstance(flips, list):  # YAML lists; a frozen dataclass holds tuples
            flips = tuple(flips)
            object.__setattr__(self, "flips", flips)
        if (not isinstance(flips, tuple) or not flips or len(set(flips)) != len(flips)
                or any(not isinstance(f, str) or f not in FLIPS for f in flips)):
            raise ValueError(
                f"SearchConfig.flips must be a non-empty tuple of distinct flips from {list(FLIPS)}, "
                f"got {self.flips!r}."
            )
        if not is_int(self.max_shift_px) or self.max_shift_px < 0:
            raise ValueError(f"SearchConfig.max_shift_px must be an integer >= 0, got {self.max_shift_px!r}.")
        for name, low in (("zoom_positions", 1), ("two_stage_above", 0), ("shortlist", 1), ("embedding_px", 1)):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise ValueError(f"SearchConfig.{name} must be an integer >= {low}, got {value!r}.")

    def shifts(self) -> list[tuple[int, int]]:
        """The ``(dx, dy)`` shifts in search order: ``(0, 0)`` first, then row by row."""
        span = range(-self.max_shift_px, self.max_shift_px + 1)
        return [(0, 0)] + [(dx, dy) for dy in span for dx in span if (dx, dy) != (0, 0)]

    def transform_names(self) -> tuple[str, ...]:
        """Names of every transform in search order (the order of `search_transforms`)."""
        return tuple(transform_name(flip, dx, dy) for flip in self.flips for dx, dy in self.shifts())


def _signed(value: int) -> str:
    return "0" if value == 0 else f"{value:+d}"


def transform_name(flip: str, dx: int, dy: int) -> str:
    """A readable name such as ``"hflip dx=+1 dy=0"`` (flip the query, then move it)."""
    return f"{_FLIP_LABELS[flip]} dx={_signed(dx)} dy={_signed(dy)}"


def shift_image(images: Tensor, dx: int, dy: int) -> Tensor:
    """Move ``images`` by ``dx`` pixels right and ``dy`` pixels down, replicating edge pixels.

    ``out[..., y, x] = images[..., clip(y - dy), clip(x - dx)]`` with indices clipped to the
    image: the strip that the shift leaves empty repeats the nearest edge pixel.

    Args:
        images: ``(..., H, W)`` tensor of any dtype.
        dx: pixels to the right (negative: left).
        dy: pixels down (negative: up).

    Returns:
        A new tensor of the shape and dtype of ``images``.
    """
    height, width = images.shape[-2:]
    rows = (torch.arange(height, device=images.device) - dy).clamp_(0, height - 1)
    cols = (torch.arange(width, device=images.device) - dx).clamp_(0, width - 1)
    return images.index_select(-2, rows).index_select(-1, cols)


def overlap(height: int, width: int, dx: int, dy: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: where an image moved by ``(dx, dy)`` still has data (`shift_image`)."""
    return max(0, dy), min(height, height + dy), max(0, dx), min(width, width + dx)


class SearchTransform(NamedTuple):
    """One transformed version of a batch of queries.

    Attributes:
        name: e.g. ``"vflip dx=-2 dy=+1"``.
        flip: a key of ``FLIPS``.
        dx, dy: the shift applied after the flip (right and down, in pixels).
        images: ``(B, C, H, W)``, the queries flipped and shifted (`shift_image`, edge
            pixels replicated into the empty strip); same dtype as the queries.
        overlap: ``(y0, y1, x0, x1)``, the rectangle of ``images`` that holds query pixels
            and not replicated ones; pixel similarities are computed on it only.
    """

    name: str
    flip: str
    dx: int
    dy: int
    images: Tensor
    overlap: tuple[int, int, int, int]


def _check_search_fits(search: SearchConfig, height: int, width: int) -> None:
    limit = (min(height, width) - 1) // 2
    if search.max_shift_px > limit:
        raise ValueError(
            f"SearchConfig.max_shift_px={search.max_shift_px} is too large for {height}x{width} images: "
            f"expected at most {limit}, so that the compared overlap covers more than half of each side."
        )


def search_transforms(queries: Tensor, search: SearchConfig) -> Iterator[SearchTransform]:
    """Every transformed version of ``queries``: each flip x each shift, in search order.

    Yields one `SearchTransform` at a time (a batch of transformed images is as large as the
    batch of queries), ``(0, 0)`` shift first for each flip, flips in ``search.flips`` order.

    Args:
        queries: ``(B, C, H, W)`` tensor, any dtype.
        search: which flips and shifts.

    Raises:
        ValueError: ``max_shift_px`` leaves an overlap of half a side or less.
    """
    if queries.ndim != 4:
        raise ValueError(f"Expected queries with shape (N, C, H, W), got {tuple(queries.shape)}.")
    height, width = queries.shape[-2:]
    _check_search_fits(search, height, width)
    for flip in search.flips:
        flipped = queries.flip(FLIPS[flip]) if FLIPS[flip] else queries
        for dx, dy in search.shifts():
            images = flipped if (dx, dy) == (0, 0) else shift_image(flipped, dx, dy)
            yield SearchTransform(transform_name(flip, dx, dy), flip, dx, dy, images, overlap(height, width, dx, dy))


# ------------------------------------------------------------------ 2-3. similarity search


class _References(NamedTuple):
    """Everything the search needs from the reference set, computed once.

    ``centred``: ``(R, C*H*W)`` float32, each reference minus its own mean. ``inv_norms``:
    ``(S, R)`` float64, one over the L2 norm of each reference centred on the overlap of
    shift ``s`` (0 for a constant overlap). ``features``: ``(R, D)`` float32 unit-norm
    reference features (zero rows for zero features), or None for pixel space only.
    ``compact``: ``(F, R, E)`` float32 unit-norm compact embeddings of every reference under
    every flip of the search (`compact_embedding`), or None when every query is compared with
    every reference (no first stage). ``groups``: ``(R,)`` int64 patient code of every reference
    (`prepare_gate`'s ``train_groups``, repeated per zoom view), or None.
    """

    centred: Tensor
    inv_norms: Tensor
    features: Tensor | None
    compact: Tensor | None = None
    groups: Tensor | None = None


def _unit_rows(features: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm in float64, returned as float32; zero rows stay zero."""
    values = features.to(torch.float64)
    norms = values.norm(dim=1, keepdim=True)
    scale = torch.where(norms > _ZERO_FEATURE_NORM, 1.0 / norms.clamp_min(_ZERO_FEATURE_NORM), 0.0)
    return (values * scale).to(torch.float32)


def _embed(embed: Embed, images: Tensor, name: str) -> Tensor:
    """``embed(images)`` without gradients, checked to be a finite ``(N, D)`` real tensor."""
    with torch.no_grad():
        features = embed(images.cpu())  # the network lives where its caller put it: the CPU
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"Expected embed({name}) to return a torch.Tensor, got {type(features).__name__}.")
    if features.ndim != 2 or features.shape[0] != images.shape[0] or features.shape[1] == 0:
        raise ValueError(
            f"Expected embed({name}) to return shape ({images.shape[0]}, D), got {tuple(features.shape)}."
        )
    if features.is_complex() or not bool(torch.isfinite(features.to(torch.float64)).all()):
        raise ValueError(f"Expected embed({name}) to return finite real features.")
    return features.detach()


def _prepare_references(
    references: Tensor,
    search: SearchConfig,
    embed: Embed | None,
    chunk_size: int,
    groups: np.ndarray | None = None,
) -> _References:
    """Centre the references, take their norm on every shift overlap, and embed them.
    ``groups``: ``(R,)`` integer patient codes of the references, or None."""
    count, channels, height, width = references.shape
    _check_search_fits(search, height, width)
    centred = references - references.to(torch.float64).mean(dim=(1, 2, 3), keepdim=True).to(torch.float32)
    shifts = search.shifts()
    inv_norms = torch.empty(len(shifts), count, dtype=torch.float64, device=references.device)
    for start in range(0, count, chunk_size):
        block = centred[start:start + chunk_size].to(torch.float64)
        for s, (dx, dy) in enumerate(shifts):
            y0, y1, x0, x1 = overlap(height, width, dx, dy)
            crop = block[:, :, y0:y1, x0:x1].reshape(block.shape[0], -1)
            size = crop.shape[1]
            variance = (crop.square().sum(dim=1) - crop.sum(dim=1).square() / size).clamp_min(0.0)
            norms = variance.sqrt()
            constant = norms <= _CONSTANT_STD * math.sqrt(size)
            inv_norms[s, start:start + chunk_size] = torch.where(constant, 0.0, 1.0 / norms.clamp_min(1e-300))
    features = None
    if embed is not None:
        blocks = [_embed(embed, references[i:i + chunk_size], "references") for i in range(0, count, chunk_size)]
        if len({b.shape[1] for b in blocks}) != 1:
            raise ValueError(f"Expected embed to return one feature size, got {sorted({b.shape[1] for b in blocks})}.")
        features = _unit_rows(torch.cat(blocks).to(references.device))
    compact = None
    if count > search.two_stage_above:
        # Flips as extra entries: a flip is its own inverse, so the correlation of a flipped
        # query with a reference equals that of the query with the flipped reference.
        compact = torch.stack([
            torch.cat([compact_embedding(centred[i:i + chunk_size].flip(FLIPS[flip]), search.embedding_px)
                       for i in range(0, count, chunk_size)])
            for flip in search.flips
        ])
    codes = None if groups is None else torch.as_tensor(np.asarray(groups), dtype=torch.int64, device=references.device)
    return _References(centred.reshape(count, -1).contiguous(), inv_norms, features, compact, codes)


def compact_embedding(images: Tensor, side: int) -> Tensor:
    """``(N, E)`` float32 thumbnails for the first stage: each image average-pooled to at most
    ``side x side`` per channel, centred and scaled to unit L2 norm (zero rows for constant
    images). The dot product of two rows is the correlation of the thumbnails, which a shift of
    a few pixels, noise and a gain or offset barely change."""
    height, width = images.shape[-2:]
    pooled = F.adaptive_avg_pool2d(images.to(torch.float32), (min(side, height), min(side, width)))
    rows = pooled.reshape(images.shape[0], -1).to(torch.float64)
    return _unit_rows(rows - rows.mean(dim=1, keepdim=True))


def shortlist_references(queries: Tensor, compact: Tensor, search: SearchConfig,
                         excluded: Tensor | None = None) -> Tensor:
    """First stage: ``(B, k)`` int64 indices of the references whose compact embedding, under
    any flip and shift of the search, correlates best with each query's, ``k = min(search.shortlist,
    R)``, best first.

    ``compact`` is ``(F, R, E)`` (`_References.compact`: every reference under every flip).
    The query is shifted at full resolution before it is pooled, so a copy moved by a few
    pixels (more than a thumbnail's cell) still ranks its source first. The exact search then
    runs on these references only (`_search`): a copy is missed only when its training image
    is not among the ``k`` best thumbnails. ``excluded``: ``(B, R)`` bool, references a query
    may not be matched with (another search's patient), or None.
    """
    best = None
    for dx, dy in search.shifts():
        moved = queries if (dx, dy) == (0, 0) else shift_image(queries, dx, dy)
        embedded = compact_embedding(moved, search.embedding_px).to(compact.device)
        scores = torch.einsum("be,fre->bfr", embedded, compact).amax(dim=1)  # (B, R)
        best = scores if best is None else torch.maximum(best, scores)
    if excluded is not None:
        best = best.masked_fill(excluded, -math.inf)
    return best.topk(min(search.shortlist, compact.shape[1]), dim=1).indices


def _pixel_scores(transform: SearchTransform, references: _References, shift_index: int) -> Tensor:
    """``(B, R)`` float64 Pearson correlation of each transformed query with each reference.

    Only the overlap enters: the query crop is centred and scaled to unit norm (float64),
    zero-padded back to full size (so the matrix product skips the empty strip) and
    multiplied with the globally centred references. Because the padded query sums to 0,
    the product equals the correlation with each reference centred on the overlap, whose
    norm is in ``references.inv_norms``.
    """
    products = _unit_overlap(transform) @ references.centred.T  # (B, R) float32
    return (products.to(torch.float64) * references.inv_norms[shift_index]).clamp_(-1.0, 1.0)


def _shortlist_scores(transform: SearchTransform, shortlisted: Tensor, inv_norms: Tensor) -> Tensor:
    """``(B, k)`` float64: `_pixel_scores` against each query's own shortlisted references only.

    ``shortlisted``: ``(B, k, C*H*W)`` the centred references of each query's shortlist;
    ``inv_norms``: ``(B, k)`` their inverse norms on this transform's overlap.
    """
    products = torch.einsum("bp,bkp->bk", _unit_overlap(transform), shortlisted)
    return (products.to(torch.float64) * inv_norms).clamp_(-1.0, 1.0)


def _unit_overlap(transform: SearchTransform) -> Tensor:
    """``(B, C*H*W)`` float32: each query's overlap centred and scaled to unit norm (float64
    arithmetic), zero outside the overlap; zero rows for constant overlaps."""
    images = transform.images
    batch = images.shape[0]
    y0, y1, x0, x1 = transform.overlap
    crop = images[:, :, y0:y1, x0:x1].to(torch.float64)
    crop = crop - crop.mean(dim=(1, 2, 3), keepdim=True)
    norms = crop.reshape(batch, -1).norm(dim=1)
    constant = norms <= _CONSTANT_STD * math.sqrt(crop[0].numel())
    scale = torch.where(constant, 0.0, 1.0 / norms.clamp_min(1e-300)).view(batch, 1, 1, 1)
    padded = torch.zeros(images.shape, dtype=torch.float32, device=images.device)
    padded[:, :, y0:y1, x0:x1] = (crop * scale).to(torch.float32)
    return padded.reshape(batch, -1)


def _keep_best(best: Tensor, best_index: Tensor, best_transform: Tensor, scores: Tensor, transform_index: int,
               columns: Tensor | None = None) -> None:
    """Update the running maximum in place; ties keep the earlier transform (identity first).

    ``columns``: ``(B, k)`` reference index of each column of ``scores`` (a shortlist), or None
    when column ``j`` is reference ``j``.
    """
    values, indices = scores.max(dim=1)
    if columns is not None:
        indices = columns.gather(1, indices[:, None])[:, 0]
    better = values > best
    best[better] = values[better]
    best_index[better] = indices[better]
    best_transform[better] = transform_index


def _query_chunk(references: _References, search: SearchConfig, chunk_size: int) -> int:
    """Queries searched at a time: ``chunk_size``, or fewer in two stages, where each query's
    shortlist of references is gathered as a (B, k, C*H*W) block kept near _SHORTLIST_BLOCK_BYTES."""
    if references.compact is None:
        return chunk_size
    k = min(search.shortlist, references.centred.shape[0])
    return max(1, min(chunk_size, _SHORTLIST_BLOCK_BYTES // (4 * k * references.centred.shape[1])))


def _search(
    queries: Tensor,
    references: _References,
    search: SearchConfig,
    embed: Embed | None,
    chunk_size: int,
    exclude: Tensor | None = None,
) -> dict[str, Tensor]:
    """Best pixel and feature match of every query: ``(N,)`` tensors on the references' device.

    ``exclude``: ``(N,)`` int64, a patient code per query (`_References.groups`) whose references
    that query is not compared with (the search for the nearest image of another patient), or None.

    Keys: ``pixel_similarity`` (float64), ``pixel_neighbour`` (int64),
    ``pixel_transform_index`` (int64, into ``search.transform_names()``),
    ``feature_similarity`` (float64, NaN without features), ``feature_neighbour`` (int64, -1
    without features).
    """
    device = references.centred.device
    count = queries.shape[0]
    use_features = references.features is not None and embed is not None
    floats, ints = {"dtype": torch.float64, "device": device}, {"dtype": torch.int64, "device": device}
    out = {
        "pixel_similarity": torch.full((count,), -math.inf, **floats),
        "pixel_neighbour": torch.zeros(count, **ints),
        "pixel_transform_index": torch.zeros(count, **ints),
        "feature_similarity": torch.full((count,), -math.inf if use_features else math.nan, **floats),
        "feature_neighbour": torch.full((count,), 0 if use_features else -1, **ints),
    }
    unused = torch.zeros(count, dtype=torch.int64, device=device)
    shifts_per_flip = len(search.shifts())
    # disable=None: a bar (with images/s) on a terminal, silence in logs and CI.
    progress = tqdm(total=count, desc="memorisation search", unit="img", leave=False, disable=None)
    log = ProgressLog(logger, "memorisation search", count, "images")  # in the log too: every 30 s, at the end
    chunk_size = _query_chunk(references, search, chunk_size)
    for start in range(0, count, chunk_size):
        stop = min(start + chunk_size, count)
        chunk = queries[start:stop].to(device)
        excluded = None
        if exclude is not None:
            excluded = references.groups[None, :] == exclude[start:stop].to(device)[:, None]  # (B, R)
        shortlist = None
        if references.compact is not None:
            shortlist = shortlist_references(chunk, references.compact, search, excluded)
            shortlisted, shortlisted_inv_norms = references.centred[shortlist], references.inv_norms[:, shortlist]
            if excluded is not None:  # fewer references than the shortlist outside the patient
                excluded = excluded.gather(1, shortlist)
        for t, transform in enumerate(search_transforms(chunk, search)):
            if shortlist is None:
                scores = _pixel_scores(transform, references, t % shifts_per_flip)
            else:
                scores = _shortlist_scores(transform, shortlisted, shortlisted_inv_norms[t % shifts_per_flip])
            if excluded is not None:
                scores = scores.masked_fill(excluded, -math.inf)
            _keep_best(out["pixel_similarity"][start:stop], out["pixel_neighbour"][start:stop],
                       out["pixel_transform_index"][start:stop], scores, t, shortlist)
            # The feature network sees each flip unshifted: global-pooled CNN features barely
            # move under a few pixels of shift, and embedding every shift would multiply the
            # cost by (2 * max_shift_px + 1) ** 2 (minutes for 64 px RGB patches on a CPU).
            if use_features and (transform.dx, transform.dy) == (0, 0):
                features = _unit_rows(_embed(embed, transform.images, "queries").to(device))
                if features.shape[1] != references.features.shape[1]:
                    raise ValueError(
                        f"Expected embed(queries) to return {references.features.shape[1]} features like the "
                        f"references, got {features.shape[1]}."
                    )
                scores = (features @ references.features.T).to(torch.float64).clamp_(-1.0, 1.0)
                _keep_best(out["feature_similarity"][start:stop], out["feature_neighbour"][start:stop],
                           unused[start:stop], scores, t)
        progress.update(stop - start)
        log.update(stop)
    progress.close()
    return out


class ZoomView(NamedTuple):
    """One searched view of the references: the crop of ``zoom`` of each side at ``(top, left)``,
    resized back (``zoom = 1``: the image itself)."""

    zoom: float
    top: int
    left: int

    def label(self) -> str:
        return "" if self.zoom == 1.0 else f" zoom={self.zoom:.2f} at y={self.top} x={self.left}"


def _positions(span: int, count: int) -> list[int]:
    """Crop offsets along one axis: every offset in ``[0, span]`` when there are at most ``count``,
    else ``count`` of them evenly spaced from 0 to ``span``; the centre when ``count`` is 1."""
    if count == 1:
        return [span // 2]
    if span + 1 <= count:
        return list(range(span + 1))
    return sorted({int(round(v)) for v in np.linspace(0, span, count)})


def _crop_size(height: int, width: int, zoom: float) -> tuple[int, int]:
    return max(1, round(height * zoom)), max(1, round(width * zoom))


def zoom_views(height: int, width: int, search: SearchConfig) -> list[ZoomView]:
    """The views `zoom_references` stacks, in its order: per zoom of ``search.zooms``, each crop
    position (rows of positions, top to bottom)."""
    views = []
    for zoom in search.zooms:
        h, w = _crop_size(height, width, zoom)
        views += [ZoomView(zoom, top, left) for top in _positions(height - h, search.zoom_positions)
                  for left in _positions(width - w, search.zoom_positions)]
    return views


def zoom_references(references: Tensor, search: SearchConfig) -> Tensor:
    """``references`` once per view of `zoom_views` (``R x len(views)`` images, view-major): the crop
    of fraction ``z`` of each side at each searched position, resized back to full size."""
    height, width = references.shape[-2:]
    views = zoom_views(height, width, search)
    if views == [ZoomView(1.0, 0, 0)]:
        return references
    stacked = []
    for view in views:
        if view.zoom == 1.0:
            stacked.append(references)
            continue
        h, w = _crop_size(height, width, view.zoom)
        crop = references[:, :, view.top:view.top + h, view.left:view.left + w]
        stacked.append(F.interpolate(crop.to(torch.float32), size=(height, width), mode="bilinear",
                                     align_corners=False, antialias=True))
    return torch.cat(stacked)


def _fold_zooms(frame: pd.DataFrame, reference_count: int, views: list[ZoomView]) -> pd.DataFrame:
    """Neighbour indices of the zoom-expanded references back to the original references;
    the view found (zoom and crop position) joins the transform name."""
    if views == [ZoomView(1.0, 0, 0)]:
        return frame
    pixel = frame["pixel_neighbour"].to_numpy()
    frame["pixel_transform"] = [name + views[i // reference_count].label()
                                for name, i in zip(frame["pixel_transform"], pixel)]
    for column in ("pixel_neighbour", "feature_neighbour"):
        raw = frame[column].to_numpy()
        frame[column] = np.where(raw >= 0, raw % reference_count, raw)
    return frame


def _frame(result: Mapping[str, Tensor], names: tuple[str, ...]) -> pd.DataFrame:
    """The nearest-neighbour table (columns ``COLUMNS``, one row per query, in query order)."""
    def column(key: str, dtype: type) -> np.ndarray:
        return result[key].detach().cpu().reshape(-1).numpy().astype(dtype)

    similarity = column("pixel_similarity", np.float64)
    return pd.DataFrame({
        "pixel_similarity": similarity,
        "pixel_distance": 1.0 - similarity,
        "pixel_neighbour": column("pixel_neighbour", np.int64),
        "pixel_transform": pd.Series([names[i] for i in column("pixel_transform_index", np.int64)], dtype=object),
        "feature_similarity": column("feature_similarity", np.float64),
        "feature_neighbour": column("feature_neighbour", np.int64),
        "other_similarity": np.nan,
        "relative_distance": np.nan,
    })


def relative_distance(similarity: np.ndarray, other_similarity: np.ndarray) -> np.ndarray:
    """``(1 - similarity) / (1 - other_similarity)``: how much nearer an image is to its nearest
    training image than to the nearest image of any other patient (0: a copy of one patient; about
    1: as near to several patients, as an unseen patient's image is). NaN where there is no other
    patient (``other_similarity`` is -inf); an image identical to two patients' images is 0."""
    near = 1.0 - np.asarray(similarity, dtype=np.float64)
    other = 1.0 - np.asarray(other_similarity, dtype=np.float64)
    ratio = np.where(other > _RELATIVE_EPSILON, near / np.maximum(other, _RELATIVE_EPSILON), 0.0)
    return np.where(np.isfinite(other), np.clip(ratio, 0.0, None), np.nan)


def nearest_table(
    queries: Tensor, references: _References, search: SearchConfig, embed: Embed | None, chunk_size: int,
    reference_count: int,
) -> pd.DataFrame:
    """The nearest reference of every query: one row per query, in order, columns `COLUMNS`.

    ``references`` are the prepared (`_prepare_references`), zoom-expanded references of
    ``reference_count`` original images; neighbour indices refer to the original images.
    Columns: ``pixel_similarity`` (float64 in [-1, 1], Pearson correlation over the overlap),
    ``pixel_distance`` (``1 - pixel_similarity``, in [0, 2]), ``pixel_neighbour`` (int64),
    ``pixel_transform`` (str, e.g. ``"hflip dx=+1 dy=0"``, or ``"none dx=-1 dy=0 zoom=0.90 at y=3
    x=0"`` when a zoomed view matched), ``feature_similarity`` (float64
    cosine; NaN without features), ``feature_neighbour`` (int64; -1 without features),
    ``other_similarity`` (the best pixel similarity to an image of any patient other than the
    nearest image's: a second search with that patient left out) and ``relative_distance``
    (`relative_distance`); both NaN when the references carry no patient codes.
    """
    result = _search_shared(queries, references, search, embed, chunk_size)
    frame = _frame(result, search.transform_names())
    if references.groups is not None:
        exclude = references.groups[result["pixel_neighbour"]]
        other = _search_shared(queries, references, search, None, chunk_size, exclude)["pixel_similarity"]
        frame["other_similarity"] = other.detach().cpu().numpy().astype(np.float64)
        frame["relative_distance"] = relative_distance(frame["pixel_similarity"], frame["other_similarity"])
    views = zoom_views(*queries.shape[-2:], search)
    return _fold_zooms(frame, reference_count, views)


def _search_shared(
    queries: Tensor, references: _References, search: SearchConfig, embed: Embed | None, chunk_size: int,
    exclude: Tensor | None = None,
) -> dict[str, Tensor]:
    """`_search` of every query; on several processes (``synthmed.core.collectives``) each searches a
    contiguous block of whole chunks of queries (`_query_chunk`) against all the references, and
    the per-query results are gathered on every process, in query order.

    Whole chunks: every chunk is the same matrix product as on one process, so the table is the
    one-process table bit for bit (a chunk cut differently rounds differently). The work is
    split only when there are more queries than one chunk: lower ``chunk_size`` to split finer.
    """
    if not collectives.active():
        return _search(queries, references, search, embed, chunk_size, exclude)
    rows = collectives.chunk_blocks(queries.shape[0], _query_chunk(references, search, chunk_size))
    start, stop = rows[distributed.rank()]
    mine = _search(queries[start:stop], references, search, embed, chunk_size,
                   None if exclude is None else exclude[start:stop])
    return {key: collectives.gather_rows(value, [b - a for a, b in rows]) for key, value in mine.items()}


# ------------------------------------------------------------------ 4. calibration


def calibrate_threshold(held_out_similarity: ArrayLike, percentile: float, *, tail: str = "high") -> float:
    """The ``percentile``-th percentile of held-out nearest-neighbour similarities.

    ``held_out_similarity`` holds, for each held-out real image (a patient not in the
    training set), its best similarity to the training set. numpy's default ``"linear"``
    method (Hyndman and Fan type 7) interpolates between order statistics at rank
    ``percentile / 100 * (n - 1)``: with fewer than ``100 / (100 - percentile)`` held-out
    images (1000 for 99.9) the rank falls between the two largest values, so the threshold
    is close to the held-out maximum and the false-positive rate is about ``1 / n``, not
    ``1 - percentile / 100``. A warning is logged then.

    Args:
        held_out_similarity: similarities, any shape (flattened), finite.
        percentile: in ``(0, 100]``; 100 gives the maximum.
        tail: "high" (a similarity: flagged at or above the threshold) or "low" (a distance, such
            as the relative distance: the ``100 - percentile``-th percentile, flagged at or below).

    Returns:
        The threshold as a float; a similarity at or above it is flagged.

    Raises:
        ValueError: empty or non-finite input, or ``percentile`` outside ``(0, 100]``.
    """
    if not is_number(percentile) or not 0.0 < percentile <= 100.0:
        raise ValueError(f"Expected percentile in (0, 100], got {percentile!r}.")
    if tail not in ("high", "low"):
        raise ValueError(f"Expected tail 'high' or 'low', got {tail!r}.")
    values = np.asarray(held_out_similarity)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"Expected held_out_similarity to be a real numeric array, got dtype {values.dtype}.")
    values = values.astype(np.float64).ravel()
    if values.size == 0:
        raise ValueError("Expected held_out_similarity to hold at least one similarity, got an empty array.")
    if not np.isfinite(values).all():
        raise ValueError(
            f"Expected held_out_similarity to contain only finite values, got "
            f"{int(np.count_nonzero(~np.isfinite(values)))} NaN or infinite values."
        )
    if percentile < 100.0 and values.size < 100.0 / (100.0 - percentile):
        logger.warning(
            "Only %d held-out images for the %.4g-th percentile: the threshold is interpolated "
            "between the %s held-out values (roughly 1 in %d unseen patients would be flagged).",
            values.size, percentile, "largest" if tail == "high" else "smallest", values.size + 1,
        )
    if tail == "low":
        return float(np.percentile(values, 100.0 - percentile, method="linear"))
    return float(np.percentile(values, percentile, method="linear"))


# ------------------------------------------------------------------ 5. planted copies


def _check_range_pair(value: object, name: str, *, positive: bool = False) -> tuple[float, float]:
    if isinstance(value, list):
        value = tuple(value)
    if (not isinstance(value, tuple) or len(value) != 2 or not all(is_number(v) for v in value)
            or value[0] > value[1] or (positive and value[0] <= 0)):
        bounds = "0 < low <= high" if positive else "low <= high"
        need = f"two finite numbers (low, high) with {bounds}"
        raise ValueError(f"PlantConfig.{name} must be {need}, got {value!r}.")
    return (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class PlantConfig:
    """How training images are disguised before they are planted for the self-test.

    Each copy, in this order: a random crop of ``crop_fraction`` of each side resized back
    to full size (bilinear), a flip (with ``flip_probability``; left-right or up-down with
    equal chance), a shift by integer ``dx, dy`` in ``[-max_shift_px, max_shift_px]`` (edge
    pixels replicated), ``x * gain + offset`` with gain and offset uniform in their ranges,
    Gaussian noise of standard deviation ``noise_std``, then clipping to ``[-1, 1]``.

    Attributes:
        count: number of planted copies (drawn without replacement when the training set
            has at least that many images).
        noise_std: noise standard deviation, in image units (the range [-1, 1] spans 2).
        max_shift_px: largest shift, in pixels.
        flip_probability: in [0, 1].
        intensity_gain: ``(low, high)``, ``0 < low <= high``.
        intensity_offset: ``(low, high)``, in image units.
        crop_fraction: in (0, 1]; 1 means no crop.
        min_source_std: images whose standard deviation is at most this carry no content (a
            blank slice, the near-empty end of a volume): they have nothing to recognise, so
            training images are planted only above it, and held-out images at or below it are
            left out of the calibration (`prepare_gate`): a blank unseen slice correlates with
            a blank training slice almost perfectly and would set the threshold for every image
            with content. Three times ``noise_std`` keeps only sources whose copies are more
            image than noise (a copy's correlation is at most ``1/sqrt(1 + (noise_std/std)^2)``).
    """

    count: int = 100
    noise_std: float = 0.05
    max_shift_px: int = 2
    flip_probability: float = 0.5
    intensity_gain: tuple[float, float] = (0.9, 1.1)
    intensity_offset: tuple[float, float] = (-0.05, 0.05)
    crop_fraction: float = 0.9
    min_source_std: float = 0.01

    def __post_init__(self) -> None:
        if not is_int(self.count) or self.count < 1:
            raise ValueError(f"PlantConfig.count must be an integer >= 1, got {self.count!r}.")
        if not is_number(self.noise_std) or self.noise_std < 0:
            raise ValueError(f"PlantConfig.noise_std must be a finite number >= 0, got {self.noise_std!r}.")
        if not is_int(self.max_shift_px) or self.max_shift_px < 0:
            raise ValueError(f"PlantConfig.max_shift_px must be an integer >= 0, got {self.max_shift_px!r}.")
        if not is_number(self.flip_probability) or not 0.0 <= self.flip_probability <= 1.0:
            raise ValueError(f"PlantConfig.flip_probability must be in [0, 1], got {self.flip_probability!r}.")
        gain = _check_range_pair(self.intensity_gain, "intensity_gain", positive=True)
        object.__setattr__(self, "intensity_gain", gain)
        object.__setattr__(self, "intensity_offset", _check_range_pair(self.intensity_offset, "intensity_offset"))
        if not is_number(self.min_source_std) or self.min_source_std < 0:
            raise ValueError(f"PlantConfig.min_source_std must be a number >= 0, got {self.min_source_std!r}.")
        if not is_number(self.crop_fraction) or not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"PlantConfig.crop_fraction must be in (0, 1], got {self.crop_fraction!r}.")


def plant_copies(
    train_images: Tensor | ArrayLike,
    config: PlantConfig,
    *,
    rng: np.random.Generator,
) -> tuple[Tensor, pd.DataFrame]:
    """Disguised copies of random training images, for the gate's self-test.

    Args:
        train_images: ``(N, C, H, W)`` training images in ``[-1, 1]``, any real dtype.
        config: the perturbations (see `PlantConfig`).
        rng: the only source of randomness (same seed, same copies).

    Returns:
        ``(copies, table)``: ``copies`` is ``(config.count, C, H, W)`` float32 in
        ``[-1, 1]``; ``table`` has one row per copy with ``source_index`` (int64 row of
        ``train_images``) and ``transform`` (str, e.g.
        ``"crop 58x58 at y=3 x=1, hflip, dx=-1 dy=+2, gain=1.032 offset=-0.011, noise_std=0.05"``).

    Raises:
        ValueError: bad images (shape, dtype, non-finite, outside [-1, 1]), a crop smaller
            than one pixel, a shift too large for the images, or ``rng`` not a Generator.
    """
    if not isinstance(config, PlantConfig):
        raise ValueError(f"Expected config to be a PlantConfig, got {type(config).__name__}.")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"Expected rng to be a numpy.random.Generator, got {type(rng).__name__}.")
    images = _as_images(train_images, "train_images")
    low, high = float(images.min()), float(images.max())
    if low < -1.0 - _RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(f"Expected train_images in [-1, 1], got values in [{low:.4g}, {high:.4g}].")
    count, (channels, height, width) = config.count, images.shape[1:]
    if config.max_shift_px >= min(height, width):
        raise ValueError(
            f"PlantConfig.max_shift_px={config.max_shift_px} is too large for {height}x{width} images: "
            f"expected at most {min(height, width) - 1}."
        )
    crop_h, crop_w = round(config.crop_fraction * height), round(config.crop_fraction * width)
    if crop_h < 1 or crop_w < 1:
        raise ValueError(
            f"PlantConfig.crop_fraction={config.crop_fraction} leaves no pixel of {height}x{width} images."
        )
    # Draw every random number up front, in a fixed order: same rng state, same copies.
    # A blank image (an empty slice, a background patch) has no identity to copy and its
    # correlation with anything is undefined: plant only images with structure.
    eligible = np.flatnonzero(~content_free(images, config.min_source_std))
    if len(eligible) == 0:
        raise ValueError(
            f"No training image has a standard deviation above PlantConfig.min_source_std={config.min_source_std}: "
            "nothing to plant (are the training images blank?)."
        )
    sources = eligible[rng.choice(len(eligible), size=count, replace=count > len(eligible))]
    tops = rng.integers(0, height - crop_h + 1, size=count)
    lefts = rng.integers(0, width - crop_w + 1, size=count)
    flipped = rng.random(count) < config.flip_probability
    flip_axes = rng.integers(0, len(_PLANT_FLIPS), size=count)
    shifts = rng.integers(-config.max_shift_px, config.max_shift_px + 1, size=(count, 2))
    gains = rng.uniform(*config.intensity_gain, size=count)
    offsets = rng.uniform(*config.intensity_offset, size=count)
    noise = rng.standard_normal((count, channels, height, width)) * config.noise_std

    copies = torch.empty(count, channels, height, width, dtype=torch.float32, device=images.device)
    descriptions = []
    for i in range(count):
        image = images[int(sources[i])][None]
        top, left = int(tops[i]), int(lefts[i])
        parts = []
        if (crop_h, crop_w) != (height, width):
            crop = image[:, :, top:top + crop_h, left:left + crop_w]
            image = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
            parts.append(f"crop {crop_h}x{crop_w} at y={top} x={left}")
        if flipped[i]:
            flip = _PLANT_FLIPS[int(flip_axes[i])]
            image = image.flip(FLIPS[flip])
            parts.append(_FLIP_LABELS[flip])
        dx, dy = int(shifts[i, 0]), int(shifts[i, 1])
        image = shift_image(image, dx, dy)
        parts.append(f"dx={_signed(dx)} dy={_signed(dy)}")
        parts.append(f"gain={gains[i]:.3f} offset={offsets[i]:+.3f}")
        parts.append(f"noise_std={config.noise_std:g}")
        copies[i] = image[0] * float(gains[i]) + float(offsets[i])
        descriptions.append(", ".join(parts))
    copies += torch.from_numpy(noise).to(device=copies.device, dtype=torch.float32)
    copies.clamp_(-1.0, 1.0)
    table = pd.DataFrame({
        "source_index": sources.astype(np.int64),
        "transform": pd.Series(descriptions, dtype=object),
    })
    return copies, table


def content_free(images: Tensor, min_std: float) -> np.ndarray:
    """``(N,)`` bool: the images whose standard deviation (over pixels and channels, in float64) is at
    most ``min_std`` (`PlantConfig.min_source_std`)."""
    return images.to(torch.float64).std(dim=(1, 2, 3)).cpu().numpy() <= min_std


def foreground_fraction(images: Tensor) -> np.ndarray:
    """``(N,)`` float64 in [0, 1]: the fraction of each image's values (over pixels and channels) more
    than 0.01 above that image's own minimum, its background (air around a body, the black outside
    a fundus photograph's field). An image without a flat background (a patch inside an organ, a
    noisy one) comes out near 1."""
    flat = images.to(torch.float32).flatten(1)
    floor = flat.min(dim=1, keepdim=True).values + _FOREGROUND_TOLERANCE
    return (flat > floor).to(torch.float64).mean(dim=1).cpu().numpy()


# ------------------------------------------------------------------ 6. the gate


@dataclass(frozen=True)
class GateConfig:
    """The memorisation gate's settings (the ``memorisation`` parameters block).

    Attributes:
        percentile: percentile of held-out nearest-neighbour similarity used as the
            threshold, in (0, 100] (`calibrate_threshold`).
        duplicate_similarity: held-out images at least this similar (pixel space) to a
            training image are copies (a leak between the splits): reported as
            ``held_out_duplicates`` and left out of the calibration.
        flag_on_features: flag on the feature threshold too (when false, the feature
            neighbour and threshold are computed and reported, but only pixel similarity
            flags: right for a classifier's features, which cluster by class).
        use_features: also compare in feature space (needs an ``embed`` at `run_gate`).
        flag_on_relative: flag too when an image's ``relative_distance`` (to its nearest training
            image, over that to the nearest image of every other patient) is at or below its own
            threshold, the ``100 - percentile``-th percentile of the held-out patients'. Needs the
            training images' patient keys (``train_groups`` at `prepare_gate`) and two patients
            or more; otherwise only the absolute thresholds flag. Where every patient's anatomy is
            alike (deformed copies of one template, aligned slices), an unseen patient comes as
            close to some training image as a disguised copy does, but not closer to one patient
            than to all the others.
        min_calibration_foreground: held-out images whose `foreground_fraction` is below this are
            left out of the thresholds (reported as ``held_out_low_foreground``), in [0, 1); 0 keeps
            them all. A slice with little tissue (the tip of the cerebellum, 10% of the frame) is a
            small silhouette, and one unseen patient's such slice can lie far nearer one training
            patient than the rest: on the 80%-lesion cohort one set the relative threshold alone
            (0.33, the next-lowest slice 0.47) and the self-test failed (docs/privacy.md, section 3).
            Left out are only those not already duplicates or content-free. Candidates and planted
            copies of every foreground are scored as before. The thresholds are interpolated
            percentiles of what is left, so leaving out the extreme slices makes them stricter, and
            leaving out others can move them by a fraction of the gap between neighbouring values
            either way (on the 40%-lesion cohort the relative threshold went from 0.4912 to 0.4897).
        min_self_test_recall: fraction of planted copies that must be flagged, in [0, 1].
        action: "fail" (block publication when any candidate is flagged) or "drop" (remove
            the flagged candidates).
        search: flips and shifts; a mapping is built into a `SearchConfig`.
        plant: self-test copies; a mapping is built into a `PlantConfig`.
        seed: seed of the planting RNG, an integer >= 0.
        device: where the search runs: "auto" (CUDA when available, else the CPU), "cpu" or
            "cuda". The feature network (``embed``) always receives CPU tensors.
    """

    percentile: float = 99.9
    duplicate_similarity: float = 0.999
    use_features: bool = True
    flag_on_features: bool = True
    flag_on_relative: bool = True
    min_calibration_foreground: float = 0.0
    min_self_test_recall: float = 0.99
    action: str = "fail"
    search: SearchConfig = field(default_factory=SearchConfig)
    plant: PlantConfig = field(default_factory=PlantConfig)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if not is_number(self.percentile) or not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"GateConfig.percentile must be a number in (0, 100], got {self.percentile!r}.")
        if not is_number(self.duplicate_similarity) or not 0.0 < self.duplicate_similarity <= 1.0:
            raise ValueError(
                f"GateConfig.duplicate_similarity must be a number in (0, 1], got {self.duplicate_similarity!r}."
            )
        if not isinstance(self.flag_on_features, bool):
            raise ValueError(f"GateConfig.flag_on_features must be true or false, got {self.flag_on_features!r}.")
        if not isinstance(self.use_features, bool):
            raise ValueError(f"GateConfig.use_features must be true or false, got {self.use_features!r}.")
        if not isinstance(self.flag_on_relative, bool):
            raise ValueError(f"GateConfig.flag_on_relative must be true or false, got {self.flag_on_relative!r}.")
        if not is_number(self.min_calibration_foreground) or not 0.0 <= self.min_calibration_foreground < 1.0:
            raise ValueError(
                "GateConfig.min_calibration_foreground must be a number in [0, 1), got "
                f"{self.min_calibration_foreground!r}."
            )
        if not is_number(self.min_self_test_recall) or not 0.0 <= self.min_self_test_recall <= 1.0:
            raise ValueError(
                f"GateConfig.min_self_test_recall must be a number in [0, 1], got {self.min_self_test_recall!r}."
            )
        if self.action not in ACTIONS:
            raise ValueError(f"GateConfig.action must be one of {list(ACTIONS)}, got {self.action!r}.")
        # Nested parameter blocks arrive from YAML as mappings; build them with the same
        # unknown/missing-key checks as every other config.
        for name, cls in (("search", SearchConfig), ("plant", PlantConfig)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, from_params(cls, value, f"memorisation.{name}"))
            elif not isinstance(value, cls):
                raise ValueError(
                    f"GateConfig.{name} must be a {cls.__name__} or a mapping, got {type(value).__name__}."
                )
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"GateConfig.seed must be an integer >= 0, got {self.seed!r}.")
        if self.device not in DEVICES:
            raise ValueError(f"GateConfig.device must be one of {list(DEVICES)}, got {self.device!r}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("GateConfig.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'.")

    def search_device(self) -> torch.device:
        """The device the search runs on (``device`` resolved; CUDA under a launcher: this
        process's GPU, ``collectives.local_device``)."""
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        return collectives.local_device(torch.device(auto if self.device == "auto" else self.device))


@dataclass(frozen=True, eq=False)
class GateReport:
    """What the gate found (`run_gate`); `enforce` turns it into a decision.

    Attributes:
        candidates: one row per candidate, the `nearest_table` columns plus ``flagged``
            (bool).
        pixel_threshold: flag when ``pixel_similarity >= pixel_threshold``.
        feature_threshold: flag when ``feature_similarity >= feature_threshold``; None when
            the feature space was not used.
        relative_threshold: flag when ``relative_distance <= relative_threshold``; None when
            no patient keys were given (or one patient only) or ``flag_on_relative`` is false.
        self_test_recall: flagged planted copies / planted copies, in [0, 1].
        planted: one row per planted copy: ``source_index``, ``transform``, the
            nearest-neighbour columns, ``flagged`` and ``found_source`` (the pixel or feature
            neighbour is the training image the copy was made from).
        held_out: one row per held-out image, the nearest-neighbour columns (the
            calibration data), ``foreground`` (`foreground_fraction`), ``duplicate``,
            ``content_free`` and ``low_foreground`` (bool, exclusive in that order: left out of the
            thresholds).
        held_out_count: number of held-out images behind the thresholds.
        config: the configuration that produced the report.
    """

    candidates: pd.DataFrame
    pixel_threshold: float
    feature_threshold: float | None
    relative_threshold: float | None
    self_test_recall: float
    planted: pd.DataFrame
    held_out: pd.DataFrame
    held_out_count: int
    config: GateConfig

    def passed_self_test(self) -> bool:
        """True when ``self_test_recall >= config.min_self_test_recall``."""
        return self.self_test_recall >= self.config.min_self_test_recall

    def summary(self) -> dict[str, float]:
        """Numbers for the dataset card and MLflow (feature_threshold is NaN when unused)."""
        return {
            "pixel_threshold": self.pixel_threshold,
            "feature_threshold": math.nan if self.feature_threshold is None else self.feature_threshold,
            "relative_threshold": math.nan if self.relative_threshold is None else self.relative_threshold,
            "percentile": float(self.config.percentile),
            "held_out_count": float(self.held_out_count),
            "held_out_duplicates": float(self.held_out["duplicate"].sum()) if "duplicate" in self.held_out else 0.0,
            "held_out_content_free": (float(self.held_out["content_free"].sum())
                                      if "content_free" in self.held_out else 0.0),
            "held_out_low_foreground": (float(self.held_out["low_foreground"].sum())
                                        if "low_foreground" in self.held_out else 0.0),
            "self_test_recall": self.self_test_recall,
            "planted_count": float(len(self.planted)),
            "planted_missed": float((~self.planted["flagged"]).sum()),
            "candidate_count": float(len(self.candidates)),
            "flagged_count": float(self.candidates["flagged"].sum()),
        }


def _flags(table: pd.DataFrame, pixel_threshold: float, feature_threshold: float | None,
           relative_threshold: float | None) -> np.ndarray:
    flagged = table["pixel_similarity"].to_numpy() >= pixel_threshold
    if feature_threshold is not None:
        flagged |= table["feature_similarity"].to_numpy() >= feature_threshold
    if relative_threshold is not None:
        flagged |= table["relative_distance"].to_numpy() <= relative_threshold  # NaN: never
    return flagged


@dataclass(frozen=True, eq=False)
class PreparedGate:
    """The gate's reference side, computed once per run (`prepare_gate`) and shared by every
    `score` call: the prepared (zoom-expanded, centred, embedded) training images, the
    thresholds calibrated on held-out patients and the self-test on planted copies. Scoring a
    batch of candidates then costs only their own search.
    """

    config: GateConfig
    references: _References
    reference_count: int
    embed: Embed | None
    chunk_size: int
    pixel_threshold: float
    feature_threshold: float | None
    relative_threshold: float | None
    held_out: pd.DataFrame
    held_out_count: int
    planted: pd.DataFrame
    self_test_recall: float
    image_shape: tuple[int, ...]

    @property
    def _flag_threshold(self) -> float | None:
        return self.feature_threshold if self.config.flag_on_features else None

    def flag(self, table: pd.DataFrame) -> np.ndarray:
        """``(N,)`` bool: the rows of a `nearest_table` this gate flags (every rule it was prepared with)."""
        return _flags(table, self.pixel_threshold, self._flag_threshold, self.relative_threshold)

    def score(self, candidates: Tensor | ArrayLike) -> GateReport:
        """Score ``candidates`` (``(N, C, H, W)``, N may be 0) with the prepared thresholds."""
        candidate_images = _as_images(candidates, "candidates", allow_empty=True)
        _check_same_geometry(candidate_images, "candidates", torch.empty((1, *self.image_shape)), "train")
        table = nearest_table(candidate_images, self.references, self.config.search, self.embed, self.chunk_size,
                              self.reference_count)
        table["flagged"] = self.flag(table)
        logger.info(
            "Memorisation gate: pixel threshold %.4f%s%s at the %.4g-th percentile of %d held-out images; "
            "self-test recall %.4f (%d of %d planted copies flagged); %d of %d candidates flagged.",
            self.pixel_threshold,
            "" if self.feature_threshold is None else f", feature threshold {self.feature_threshold:.4f}",
            "" if self.relative_threshold is None else f", relative distance threshold {self.relative_threshold:.4f}",
            self.config.percentile, self.held_out_count, self.self_test_recall, int(self.planted["flagged"].sum()),
            len(self.planted), int(table["flagged"].sum()), len(table),
        )
        return GateReport(
            candidates=table,
            pixel_threshold=self.pixel_threshold,
            feature_threshold=self.feature_threshold,
            relative_threshold=self.relative_threshold,
            self_test_recall=self.self_test_recall,
            planted=self.planted,
            held_out=self.held_out,
            held_out_count=self.held_out_count,
            config=self.config,
        )


def _patient_codes(train_groups: ArrayLike | None, count: int) -> np.ndarray | None:
    """``(count,)`` int64 codes of the training images' patient keys; None without keys or with one
    patient (nothing to be nearer to than the others)."""
    if train_groups is None:
        return None
    keys = np.asarray(train_groups).ravel()
    if len(keys) != count:
        raise ValueError(
            f"Expected train_groups to hold one patient key per training image ({count}), got {len(keys)}.")
    if pd.isna(keys).any():
        raise ValueError(f"Expected a patient key for every training image, got {int(pd.isna(keys).sum())} missing.")
    codes, uniques = pd.factorize(keys)
    if len(uniques) < 2:
        logger.info("The training images are of one patient: the gate flags on absolute similarity only.")
        return None
    return codes.astype(np.int64)


def calibration_rows(held_out: pd.DataFrame) -> pd.Series:
    """The held-out images that set the threshold: neither copies of training images, content-free,
    nor low in foreground (the three columns ``prepare_gate`` adds; a column absent excludes nothing)."""
    keep = pd.Series(True, index=held_out.index)
    for column in ("duplicate", "content_free", "low_foreground"):
        if column in held_out:
            keep &= ~held_out[column].astype(bool)
    return keep


def held_out_maxima(held_out: pd.DataFrame) -> dict[str, float]:
    """How near the held-out patients' images came to the training images (pixel NCC): the closest of
    all of them (``held_out_max_pixel_similarity``, copies, blank and low-tissue images too) and the closest
    of those that set the threshold (``calibration_max_pixel_similarity``, `calibration_rows`)."""
    similarity = held_out["pixel_similarity"]
    return {"held_out_max_pixel_similarity": float(similarity.max()),
            "calibration_max_pixel_similarity": float(similarity[calibration_rows(held_out)].max())}


def prepare_gate(
    train: Tensor | ArrayLike,
    held_out: Tensor | ArrayLike,
    *,
    config: GateConfig,
    embed: Embed | None = None,
    chunk_size: int = 256,
    train_groups: ArrayLike | None = None,
) -> PreparedGate:
    """Prepare the training images, calibrate the thresholds on held-out patients and self-test.

    (a) Nearest neighbours of ``held_out`` in ``train`` -> ``pixel_threshold`` (and
    ``feature_threshold`` when ``config.use_features`` and ``embed`` is given) at
    ``config.percentile``. (c) ``config.plant.count`` disguised training copies (`plant_copies`,
    seeded by ``config.seed``) are scored with the same thresholds; the self-test recall is the
    fraction flagged. Candidates are scored later, as often as needed, by `PreparedGate.score`
    (b). Above ``config.search.two_stage_above`` references the search runs in two stages
    (`shortlist_references`), for the held-out images, the planted copies and the candidates
    alike, so the self-test measures the search that scores the candidates.

    Args:
        train: ``(R, C, H, W)`` training images in [-1, 1].
        held_out: ``(M, C, H, W)`` real images of patients not in ``train``.
        config: the gate settings.
        embed: feature network ``(B, C, H, W) float32 -> (B, D)``, or None.
        chunk_size: queries compared at a time (memory grows as ``chunk_size x R``).
        train_groups: ``(R,)`` the patient key of every training image, or None. With two
            patients or more (and ``config.flag_on_relative``), every search also finds each
            image's nearest image of another patient, and ``relative_distance`` flags too
            (`GateConfig.flag_on_relative`); the search then costs twice as much.

    Raises:
        MemorisationError: no held-out image is left to calibrate on (each is a copy of a training
            image, content-free or below ``config.min_calibration_foreground``).
    """
    if not isinstance(config, GateConfig):
        raise ValueError(f"Expected config to be a GateConfig, got {type(config).__name__}.")
    chunk_size = _check_chunk_size(chunk_size)
    train_images = _as_images(train, "train")
    held_out_images = _as_images(held_out, "held_out")
    _check_same_geometry(held_out_images, "held_out", train_images, "train")
    use_features = config.use_features and embed is not None
    if config.use_features and embed is None:
        logger.warning("GateConfig.use_features is true but no embed was given: pixel space only.")
    features = embed if use_features else None
    search = config.search
    codes = _patient_codes(train_groups, len(train_images)) if config.flag_on_relative else None
    references = zoom_references(train_images.to(config.search_device()), search)
    views = len(references) // len(train_images)
    prepared = _prepare_references(references, search, features, chunk_size,
                                   None if codes is None else np.tile(codes, views))

    def score(images: Tensor) -> pd.DataFrame:
        return nearest_table(images, prepared, search, features, chunk_size, len(train_images))

    # (a) calibration on held-out patients. A held-out image that is itself a copy of a
    # training image (a split leak, e.g. mirrored slices of a symmetric template) says nothing
    # about how close an unseen patient comes: it is reported and left out of the threshold.
    # So is a content-free one (a blank slice, never planted either): it matches a blank
    # training slice almost perfectly and would set the threshold for every image with content.
    held_out_table = score(held_out_images)
    held_out_table["duplicate"] = held_out_table["pixel_similarity"].to_numpy() >= config.duplicate_similarity
    held_out_table["content_free"] = content_free(held_out_images, config.plant.min_source_std)
    # And so is one whose tissue fills little of the frame (`GateConfig.min_calibration_foreground`);
    # counted only when not left out already, so that the three counts add up.
    held_out_table["foreground"] = foreground_fraction(held_out_images)
    held_out_table["low_foreground"] = (
        (held_out_table["foreground"].to_numpy() < config.min_calibration_foreground)
        & ~held_out_table["duplicate"].to_numpy() & ~held_out_table["content_free"].to_numpy()
    )
    calibration = held_out_table[calibration_rows(held_out_table)]
    if held_out_table["duplicate"].any():
        logger.warning(
            "%d of %d held-out images are copies of training images (pixel similarity >= %s): a leak between the "
            "splits; they are left out of the threshold.", int(held_out_table["duplicate"].sum()),
            len(held_out_table), config.duplicate_similarity)
    if held_out_table["content_free"].any():
        logger.info(
            "%d of %d held-out images have a standard deviation <= plant.min_source_std=%s (no content): left out "
            "of the threshold.", int(held_out_table["content_free"].sum()), len(held_out_table),
            config.plant.min_source_std)
    if held_out_table["low_foreground"].any():
        logger.info(
            "%d of %d held-out images have foreground below min_calibration_foreground=%s: left out of the "
            "threshold.", int(held_out_table["low_foreground"].sum()), len(held_out_table),
            config.min_calibration_foreground)
    if calibration.empty:
        raise MemorisationError(
            f"None of the {len(held_out_table)} held-out images can calibrate the threshold: "
            f"{int(held_out_table['duplicate'].sum())} are copies of training images (pixel similarity >= "
            f"{config.duplicate_similarity}; check the splits), {int(held_out_table['content_free'].sum())} have "
            f"no content (standard deviation <= plant.min_source_std={config.plant.min_source_std}) and "
            f"{int(held_out_table['low_foreground'].sum())} too little foreground (below "
            f"min_calibration_foreground={config.min_calibration_foreground})."
        )
    pixel_threshold = calibrate_threshold(calibration["pixel_similarity"].to_numpy(), config.percentile)
    feature_threshold: float | None = None
    if use_features:
        feature_threshold = calibrate_threshold(calibration["feature_similarity"].to_numpy(), config.percentile)
    flag_threshold = feature_threshold if config.flag_on_features else None
    relative_threshold: float | None = None
    if codes is not None:  # the low tail: an unseen patient is rarely much nearer one patient than the rest
        relative_threshold = calibrate_threshold(calibration["relative_distance"].to_numpy(), config.percentile,
                                                 tail="low")
    # (c) self-test
    planted_images, plant_table = plant_copies(train_images, config.plant, rng=np.random.default_rng(config.seed))
    planted_table = pd.concat([plant_table, score(planted_images)], axis=1)
    planted_table["flagged"] = _flags(planted_table, pixel_threshold, flag_threshold, relative_threshold)
    planted_table["found_source"] = (planted_table["pixel_neighbour"] == planted_table["source_index"]) | (
        planted_table["feature_neighbour"] == planted_table["source_index"]
    )
    return PreparedGate(
        config=config, references=prepared, reference_count=len(train_images), embed=features,
        chunk_size=chunk_size, pixel_threshold=pixel_threshold, feature_threshold=feature_threshold,
        relative_threshold=relative_threshold, held_out=held_out_table, held_out_count=len(calibration),
        planted=planted_table,
        self_test_recall=float(planted_table["flagged"].mean()), image_shape=tuple(train_images.shape[1:]),
    )


def run_gate(
    candidates: Tensor | ArrayLike,
    train: Tensor | ArrayLike,
    held_out: Tensor | ArrayLike,
    *,
    config: GateConfig,
    embed: Embed | None = None,
    chunk_size: int = 256,
    train_groups: ArrayLike | None = None,
) -> GateReport:
    """Score candidates against the training set with a held-out-calibrated threshold, and self-test.

    `prepare_gate` (calibration on ``held_out``, self-test on planted copies of ``train``) then
    `PreparedGate.score` (each candidate flagged when ``pixel_similarity >= pixel_threshold`` or
    ``feature_similarity >= feature_threshold``). Callers that score several batches against
    the same training set (rounds of over-generation) prepare once and call ``score``.

    Args:
        candidates: ``(N, C, H, W)`` synthetic images, by convention float in [-1, 1]; N may
            be 0.
        train: ``(R, C, H, W)`` training images in [-1, 1].
        held_out: ``(M, C, H, W)`` real images of patients not in ``train``.
        config: the gate settings.
        embed: feature network ``(B, C, H, W) float32 -> (B, D)``, or None.
        chunk_size: queries compared at a time (memory grows as ``chunk_size x R``).
        train_groups: ``(R,)`` patient keys of the training images (`prepare_gate`), or None.

    Returns:
        A `GateReport`; nothing is blocked yet (see `enforce`).
    """
    if not isinstance(config, GateConfig):
        raise ValueError(f"Expected config to be a GateConfig, got {type(config).__name__}.")
    _check_chunk_size(chunk_size)
    _check_same_geometry(_as_images(candidates, "candidates", allow_empty=True), "candidates",
                         _as_images(train, "train"), "train")
    return prepare_gate(train, held_out, config=config, embed=embed, chunk_size=chunk_size,
                        train_groups=train_groups).score(candidates)


def enforce(report: GateReport, config: GateConfig, *, max_listed: int = 5) -> np.ndarray:
    """Apply the gate: refuse on a failed self-test, then fail or drop flagged candidates.

    Args:
        report: from `run_gate`.
        config: gives ``min_self_test_recall`` and ``action``.
        max_listed: flagged candidates named in the error message.

    Returns:
        ``(N,)`` bool keep-mask over the candidates: all True when nothing is flagged; with
        ``action="drop"``, False exactly for the flagged candidates.

    Raises:
        MemorisationError: the self-test recall is below ``config.min_self_test_recall``
            (whatever the action), or ``action="fail"`` and a candidate is flagged.
    """
    if not isinstance(report, GateReport):
        raise ValueError(f"Expected report to be a GateReport, got {type(report).__name__}.")
    if not isinstance(config, GateConfig):
        raise ValueError(f"Expected config to be a GateConfig, got {type(config).__name__}.")
    planted = len(report.planted)
    missed = int((~report.planted["flagged"].to_numpy(bool)).sum())
    if report.self_test_recall < config.min_self_test_recall:
        raise MemorisationError(
            f"Memorisation gate self-test failed: recall {report.self_test_recall:.4f} is below the minimum "
            f"{config.min_self_test_recall}; {missed} of {planted} planted training copies were not flagged "
            f"(pixel threshold {report.pixel_threshold:.4f}"
            + ("" if report.relative_threshold is None
               else f", relative distance threshold {report.relative_threshold:.4f}")
            + f"). The gate cannot see copies; nothing is published. The thresholds come from "
            f"{report.held_out_count} held-out images: with few of them, the one or two most extreme set them (for "
            "example an edge slice with little tissue that happens to lie near one training patient), and more "
            "held-out patients make them steadier. For the rebalancing gate on slices, `PYTHONPATH=src python "
            "benchmarks/gate_diagnose.py --env <env>` lists those images and the missed copies (README, "
            "\"Evaluation and the memorisation gate\")."
        )
    flagged = report.candidates["flagged"].to_numpy(bool)
    count = int(flagged.sum())
    if count and config.action == "fail":
        rows = report.candidates[flagged].head(max_listed)
        listed = "; ".join(
            f"#{index}: pixel similarity {row.pixel_similarity:.4f} to training image {row.pixel_neighbour} "
            f"({row.pixel_transform})"
            + ("" if math.isnan(row.relative_distance) else f", relative distance {row.relative_distance:.3f}")
            + ("" if row.feature_neighbour < 0
               else f", feature similarity {row.feature_similarity:.4f} to training image {row.feature_neighbour}")
            for index, row in rows.iterrows()
        )
        raise MemorisationError(
            f"Memorisation gate: {count} of {len(flagged)} candidates are flagged as copies of training images "
            f"(pixel threshold {report.pixel_threshold:.4f}"
            + ("" if report.feature_threshold is None else f", feature threshold {report.feature_threshold:.4f}")
            + ("" if report.relative_threshold is None
               else f", relative distance threshold {report.relative_threshold:.4f}")
            + f"); first {len(rows)}: {listed}."
        )
    logger.info(
        "Memorisation gate passed (self-test recall %.4f, %d of %d planted missed): keeping %d of %d candidates, "
        "dropped %d.", report.self_test_recall, missed, planted, len(flagged) - count, len(flagged), count,
    )
    return ~flagged
