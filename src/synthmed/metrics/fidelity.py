"""Fidelity and diversity of synthetic images: FID, KID, PRDC, MS-SSIM diversity, paired scores.

Two kinds of input:

- features ``(N, D)`` float, computed once elsewhere by a pluggable feature network (this
  module never builds one). FID, KID and PRDC work on them; ``PrecomputedFeatures`` lets the
  torchmetrics FID/KID classes consume them directly.
- images ``(N, C, H, W)`` float in ``[-1, 1]`` (C = 1 grey or 3 RGB), so ``data_range = 2.0``.
  MS-SSIM diversity and the paired scores (MSE, SSIM, PSNR) work on them.

Medical sets are small (tens to a few hundred images), so every distance comes with its N and,
where it matters, a bootstrap interval (``bootstrap_interval``, ``summarise``) and a real-vs-real
floor on the same N (``real_floor_split``). FID in particular is biased upwards at small N
(Chong & Forsyth, CVPR 2020): compare FIDs only at equal N.

SSIM-based scores shift the images from ``[-data_range / 2, data_range / 2]`` to
``[0, data_range]`` first. MSE and PSNR do not change under a shift, but SSIM's luminance term
``(2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)`` (Wang et al. 2004, eq. 6) assumes non-negative
intensities: with signed values two dark patches of means +0.01 and -0.01 would score 0.33. The
shifted score equals SSIM of the images mapped to ``[0, 1]`` (SSIM is invariant to a common
scaling of images and data range).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from synthmed.core.progress import ProgressLog
from synthmed.metrics.resampling import Groups, bootstrap_units, disjoint_halves, draw_units, n_groups, same_groups

logger = logging.getLogger(__name__)
# torchmetrics (about 1 s to import) is imported inside the functions that use it: the parameter
# check imports the modules that define configuration dataclasses before every kedro run.

# Wang, Simoncelli & Bovik, "Multi-scale structural similarity for image quality assessment",
# Asilomar 2003, Table 1 / eq. 7: the exponents of scales 1 (finest) .. 5 (coarsest).
WANG_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# Wang et al. 2004 (SSIM), Sec. III-C: an 11 x 11 circular-symmetric Gaussian, sigma 1.5 px.
WANG_WINDOW_PX = 11
WANG_SIGMA_PX = 1.5
# The smallest Gaussian window that still has a centre and a neighbourhood.
MIN_WINDOW_PX = 3
IMAGE_CHANNELS = (1, 3)
# real_floor_split: two disjoint halves, each with the 2 rows a covariance needs.
MIN_FLOOR_POOL = 4
MS_SSIM_NORMALIZE = ("relu", "simple")
# torchmetrics KID warns on every construction that it buffers all features; here they are
# already in memory (they are the input), so the warning says nothing.
_KID_BUFFER_WARNING = r"Metric `Kernel Inception Distance` will save all extracted features in buffer"


# ------------------------------------------------------------------ validation


def _shape(tensor: Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _check_features(name: str, features: Any, *, min_rows: int = 2) -> Tensor:
    """``features`` must be a finite ``(N, D)`` float tensor with ``N >= min_rows``."""
    if not isinstance(features, Tensor):
        raise TypeError(f"Expected {name} to be a torch.Tensor of shape (N, D), got {type(features).__name__}.")
    if features.ndim != 2:
        raise ValueError(f"Expected {name} with shape (N, D), got {_shape(features)}.")
    if not features.is_floating_point():
        raise ValueError(f"Expected {name} with a floating-point dtype, got {features.dtype}.")
    if features.shape[0] < min_rows:
        raise ValueError(f"Expected {name} with at least {min_rows} rows (N >= {min_rows}), got {_shape(features)}.")
    if features.shape[1] < 1:
        raise ValueError(f"Expected {name} with at least one feature column (D >= 1), got {_shape(features)}.")
    non_finite = int((~torch.isfinite(features)).sum())
    if non_finite:
        raise ValueError(f"Expected finite {name}, got {non_finite} NaN/inf values in shape {_shape(features)}.")
    return features


def _check_pair(real: Any, fake: Any, *, min_rows: int = 2) -> tuple[Tensor, Tensor]:
    real = _check_features("real", real, min_rows=min_rows)
    fake = _check_features("fake", fake, min_rows=min_rows)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"Expected real and fake with the same feature size D, got real {_shape(real)} and fake {_shape(fake)}."
        )
    return real, fake


def _check_images(name: str, images: Any, *, data_range: float, min_images: int = 1) -> Tensor:
    """``images`` must be a finite ``(N, C, H, W)`` float tensor, C in {1, 3}, in the centred range."""
    if not isinstance(images, Tensor):
        raise TypeError(f"Expected {name} to be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[1] not in IMAGE_CHANNELS:
        raise ValueError(f"Expected {name} with shape (N, C, H, W) and C in {IMAGE_CHANNELS}, got {_shape(images)}.")
    if not images.is_floating_point():
        raise ValueError(f"Expected {name} with a floating-point dtype, got {images.dtype}.")
    if images.shape[0] < min_images:
        raise ValueError(f"Expected {name} with at least {min_images} images, got {_shape(images)}.")
    non_finite = int((~torch.isfinite(images)).sum())
    if non_finite:
        raise ValueError(f"Expected finite {name}, got {non_finite} NaN/inf values in shape {_shape(images)}.")
    half = data_range / 2.0
    low, high = float(images.min()), float(images.max())
    if low < -half or high > half:
        raise ValueError(
            f"Expected {name} in [{-half}, {half}] (data_range={data_range}), got values in [{low}, {high}]; "
            "clip the images upstream."
        )
    return images


def _check_data_range(data_range: Any) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
        raise ValueError(f"Expected data_range to be a positive number, got {data_range!r}.")
    return float(data_range)


def _check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected {name} to be an int >= {minimum}, got {value!r}.")
    return value


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"Expected level to be a number in (0, 1), e.g. 0.95, got {level!r}.")
    return float(level)


# ------------------------------------------------------------------ FID and KID


class PrecomputedFeatures(nn.Module):
    """A passthrough "feature network": torchmetrics FID/KID on features computed elsewhere.

    Why it exists: the feature network (Inception, a radiology backbone, ...) is pluggable and
    runs once per image set. The same ``(N, D)`` features then feed FID, KID, PRDC, the
    memorisation check and every bootstrap resample, which would otherwise re-run the network
    hundreds of times. ``FrechetInceptionDistance(feature=PrecomputedFeatures(D))`` and
    ``KernelInceptionDistance(feature=PrecomputedFeatures(D))`` accept the features as if they
    were images, and this module hands them back unchanged.

    How torchmetrics 1.9 calls a custom ``feature`` module (image/fid.py, image/kid.py):

    - FID reads ``num_features`` (int or tensor) to size its running sums. Without that
      attribute it calls the module once on a dummy *image* ``(1, 3, 299, 299)`` and takes
      ``shape[-1]``: a passthrough would answer 299. Hence ``num_features`` is required here.
      KID needs no size (it keeps the raw features).
    - ``normalize`` only converts ``[0, 1]`` floats to uint8 for the built-in Inception; for a
      custom module it never touches the input (it only picks the dummy image's dtype, which is
      never built here). Leave it at ``False``.
    - ``update(x, real)`` calls ``forward(x)``; FID then casts the features to float64 for its
      sums and casts the result back to the features' dtype, so float64 features give a float64
      FID. KID uses the features' own dtype.

    Args:
        num_features: D, the feature size every input must have.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = _check_positive_int("num_features", num_features)

    def forward(self, features: Tensor) -> Tensor:
        """``(N, D)`` float features -> the same tensor (no copy, no cast)."""
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"Expected features with shape (N, {self.num_features}), got {_shape(features)}; "
                "PrecomputedFeatures takes features, not images."
            )
        return features

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}"


class _FrechetMoments:
    """FID of two feature sets and of weighted resamples of them, from sufficient statistics.

    A bootstrap resample that draws row ``i`` ``w_i`` times has mean ``sum w_i x_i / n`` and
    unbiased covariance ``(sum w_i x_i x_i^T - n mu mu^T) / (n - 1)``, the same as the indexed
    rows' (``n = sum w``). The rows are prepared once (float64, each set minus its own mean,
    which keeps the sums well conditioned); a resample then needs weighted sums and one
    symmetric square root, and no metric object. ``Tr (S_r S_f)^{1/2}`` has two exact forms:

    - ``D <= min(N, M)``: ``Tr (R S_f R)^{1/2}`` with ``R = S_r^{1/2}`` (``R S_f R`` is
      symmetric PSD with the eigenvalues of ``S_r S_f``): two ``D x D`` symmetric
      eigendecompositions.
    - otherwise (more dimensions than rows, e.g. 2048-d backbones on hundreds of images): the
      nuclear norm of ``W_r^{1/2} C_r C_f^T W_f^{1/2}``, ``C`` the centred rows, divided by
      ``sqrt((n - 1)(m - 1))``: the non-zero eigenvalues of ``S_r S_f`` are the squared singular
      values of that ``N x M`` matrix, built from the ``N x M`` Gram matrix computed once, so a
      resample costs ``O(N M)`` plus one SVD instead of ``O(D^3)``.

    torchmetrics takes the eigenvalues of the non-symmetric ``S_r S_f`` instead; both agree to
    rounding (tests compare them).
    """

    def __init__(self, real: Tensor, fake: Tensor) -> None:
        real = real.detach().to(torch.float64)
        fake = fake.detach().to(device=real.device, dtype=torch.float64)
        self.mean_gap = real.mean(dim=0) - fake.mean(dim=0)
        self.real = real - real.mean(dim=0)
        self.fake = fake - fake.mean(dim=0)
        self.real_sq = self.real.square().sum(dim=1)
        self.fake_sq = self.fake.square().sum(dim=1)
        self.use_gram = real.shape[1] > min(real.shape[0], fake.shape[0])
        self.gram = self.real @ self.fake.T if self.use_gram else None

    def distance(self, real_weights: Tensor, fake_weights: Tensor) -> float:
        """FID of the resample that takes row i of each set ``weights[i]`` times (float64 counts)."""
        n, m = float(real_weights.sum()), float(fake_weights.sum())
        mu_r = real_weights @ self.real / n  # offsets from the full sets' means
        mu_f = fake_weights @ self.fake / m
        mean_term = (self.mean_gap + mu_r - mu_f).square().sum()
        trace_r = (real_weights @ self.real_sq - n * mu_r.square().sum()) / (n - 1)
        trace_f = (fake_weights @ self.fake_sq - m * mu_f.square().sum()) / (m - 1)
        if self.use_gram:
            rows, cols = real_weights > 0, fake_weights > 0
            cross = (self.gram[rows][:, cols] - (self.real[rows] @ mu_f)[:, None]
                     - (self.fake[cols] @ mu_r)[None, :] + mu_r @ mu_f)
            cross = real_weights[rows].sqrt()[:, None] * cross * fake_weights[cols].sqrt()[None, :]
            root_trace = torch.linalg.svdvals(cross).sum() / math.sqrt((n - 1) * (m - 1))
        else:
            cov_r = self._covariance(self.real, real_weights, mu_r, n)
            cov_f = self._covariance(self.fake, fake_weights, mu_f, m)
            values, vectors = torch.linalg.eigh(cov_r)
            root_r = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
            inner = root_r @ cov_f @ root_r
            # Clamp: rounding can leave eigenvalues of a PSD matrix at -1e-16.
            root_trace = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
        return float(mean_term + trace_r + trace_f - 2 * root_trace)

    @staticmethod
    def _covariance(rows: Tensor, weights: Tensor, mean: Tensor, count: float) -> Tensor:
        return ((rows * weights[:, None]).T @ rows - count * torch.outer(mean, mean)) / (count - 1)

    def full(self) -> float:
        """FID of the full sets."""
        return self.distance(torch.ones(self.real.shape[0], dtype=torch.float64, device=self.real.device),
                             torch.ones(self.fake.shape[0], dtype=torch.float64, device=self.real.device))


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID on any features).

    ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2})`` (Heusel et al., NeurIPS 2017),
    in float64 with unbiased covariances: the value torchmetrics ``FrechetInceptionDistance``
    gives (to rounding), computed without it (see ``_FrechetMoments``). Biased upwards at small
    N: report N with it and compare only at equal N (see ``real_floor_split``).

    Args:
        real: ``(N_real, D)`` finite float features, ``N_real >= 2``.
        fake: ``(N_fake, D)`` finite float features, ``N_fake >= 2``.

    Returns:
        The distance (>= 0 up to rounding).
    """
    real, fake = _check_pair(real, fake)
    return _FrechetMoments(real, fake).full()


def kernel_distance(
    real: Tensor, fake: Tensor, *, subset_size: int = 100, subsets: int = 50, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al., ICLR 2018) on two feature sets.

    The unbiased MMD^2 with the cubic polynomial kernel ``(x.y / D + 1)^3``, averaged over
    ``subsets`` random subsets of ``subset_size`` rows of each set (torchmetrics
    ``KernelInceptionDistance``, float64).

    ``subset_size`` is clipped to ``min(N_real, N_fake)``: medical sets are often smaller than
    the usual 1000 (torchmetrics would refuse them). When a set is clipped to its full size,
    every subset of it is the whole set, and the std only reflects the other set's subsets (0
    when both are clipped).

    torchmetrics draws the subsets from the global torch RNG; the draw runs inside
    ``torch.random.fork_rng()`` seeded with ``seed``, so the result depends on ``seed`` only and
    the caller's RNG state is left as it was.

    Args:
        real: ``(N_real, D)`` finite float features, ``N_real >= 2``.
        fake: ``(N_fake, D)`` finite float features, ``N_fake >= 2``.
        subset_size: rows per subset (>= 2), clipped as above.
        subsets: number of subsets (>= 1).
        seed: seeds the subset draw.

    Returns:
        ``(mean, std)`` of the subset estimates; the mean can be slightly negative (unbiased).
    """
    real, fake = _check_pair(real, fake)
    _check_positive_int("subset_size", subset_size, minimum=2)
    _check_positive_int("subsets", subsets)
    used_size = min(subset_size, real.shape[0], fake.shape[0])
    if used_size < subset_size:
        logger.info("KID subset_size %d clipped to %d (N_real=%d, N_fake=%d).",
                    subset_size, used_size, real.shape[0], fake.shape[0])
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_KID_BUFFER_WARNING, category=UserWarning)
        metric = KernelInceptionDistance(
            feature=PrecomputedFeatures(real.shape[1]), subsets=subsets, subset_size=used_size, normalize=False
        )
    metric = metric.to(real.device)
    metric.update(real.detach().to(torch.float64), real=True)
    metric.update(fake.detach().to(device=real.device, dtype=torch.float64), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


# ------------------------------------------------------------------ uncertainty and floors


@dataclass(frozen=True)
class Interval:
    """A statistic on the full sets with its percentile-bootstrap interval.

    Attributes:
        estimate: the statistic on the full (not resampled) sets.
        low, high: the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the resamples.
        n_real, n_fake: rows in each set (FID and KID depend on them).
        resamples: number of bootstrap resamples.
        level: the interval's nominal coverage, e.g. 0.95.
        real_units: what the resamples drew of ``real``: its patients when grouped, else its rows.
    """

    estimate: float
    low: float
    high: float
    n_real: int
    n_fake: int
    resamples: int
    level: float
    real_units: int = 0


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_interval(
    statistic: Callable[[Tensor, Tensor], float],
    real: Tensor,
    fake: Tensor,
    *,
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
    real_groups: Groups = None,
    fake_groups: Groups = None,
    paired: bool = False,
) -> Interval:
    """Percentile bootstrap (Efron & Tibshirani 1993, ch. 13) of a two-set statistic.

    Each resample draws ``N_real`` rows of ``real`` and, independently, ``N_fake`` rows of
    ``fake`` with replacement (``np.random.default_rng(seed)``), so it reflects the sampling
    noise of both sets. With ``real_groups`` (a patient key per row) it draws as many patients
    as ``real`` holds, with replacement, each with all its rows (a cluster bootstrap,
    ``synthmed.metrics.resampling``): slices of one patient are not independent, and drawing
    them one by one gives an interval far too narrow. ``fake_groups`` likewise.

    ``paired``: row ``i`` of ``fake`` belongs with row ``i`` of ``real`` (a slice and its
    neighbour, a slice and its inpainted copy), so each resample draws one set of rows (or
    patients, by ``real_groups``) and takes them from both. Drawn independently, a resample would
    compare one patient's slices with another's neighbours: the interval would measure how far
    different patients lie apart, not the sampling noise of the pairs, and lie far above the
    estimate.

    Caveat: duplicated rows shrink a resample's spread, so set distances such as FID are larger
    on resamples than on the full sets; the FID interval can then lie above the estimate. It
    still measures the spread; the estimate is always the statistic on the full sets.

    ``frechet_distance`` is recognised and bootstrapped by ``frechet_interval`` (same resamples,
    from sufficient statistics, much faster at large D).

    Args:
        statistic: ``statistic(real, fake) -> float``, e.g. ``frechet_distance``.
        real: ``(N_real, ...)`` rows (features or images), ``N_real >= 1``.
        fake: ``(N_fake, ...)`` rows, ``N_fake >= 1``.
        resamples: number of bootstrap resamples (>= 1).
        level: nominal coverage in (0, 1).
        seed: seeds the resampling.
        real_groups, fake_groups: ``(N_real,)`` / ``(N_fake,)`` patient keys, or None (each row
            its own unit).
        paired: draw the same rows of both sets (``N_real == N_fake``; ``fake_groups``, when
            given, equal to ``real_groups``).

    Returns:
        An ``Interval``.
    """
    for name, rows in (("real", real), ("fake", fake)):
        if not isinstance(rows, Tensor) or rows.ndim < 1 or rows.shape[0] < 1:
            shape = _shape(rows) if isinstance(rows, Tensor) else type(rows).__name__
            raise ValueError(f"Expected {name} to be a tensor with at least one row, got {shape}.")
    if not callable(statistic):
        raise TypeError(f"Expected statistic to be callable(real, fake) -> float, got {statistic!r}.")
    resamples = _check_positive_int("resamples", resamples)
    level = _check_level(level)
    if statistic is frechet_distance:
        return frechet_interval(real, fake, resamples=resamples, level=level, seed=seed, real_groups=real_groups,
                                fake_groups=fake_groups, paired=paired)

    def resampled(real_rows: np.ndarray, fake_rows: np.ndarray) -> float:
        return float(statistic(real[torch.as_tensor(real_rows, device=real.device)],
                               fake[torch.as_tensor(fake_rows, device=fake.device)]))

    return _percentile_bootstrap(float(statistic(real, fake)), resampled, real.shape[0], fake.shape[0],
                                 resamples=resamples, level=level, seed=seed, real_groups=real_groups,
                                 fake_groups=fake_groups, paired=paired)


def frechet_interval(
    real: Tensor, fake: Tensor, *, resamples: int = 200, level: float = 0.95, seed: int = 0,
    real_groups: Groups = None, fake_groups: Groups = None, paired: bool = False,
) -> Interval:
    """``bootstrap_interval(frechet_distance, ...)`` from sufficient statistics.

    The same resamples (same seed, same rows drawn) and, to rounding, the same values; each
    resample is a weighted mean and covariance of the prepared features (``_FrechetMoments``)
    instead of a copy of the rows and a new metric object.

    Args:
        real: ``(N_real, D)`` finite float features, ``N_real >= 2``.
        fake: ``(N_fake, D)`` finite float features, ``N_fake >= 2``.
        resamples: number of bootstrap resamples (>= 1).
        level: nominal coverage in (0, 1).
        seed: seeds the resampling.
        real_groups, fake_groups: patient keys per row, or None (see ``bootstrap_interval``).
        paired: draw the same rows of both sets (see ``bootstrap_interval``).

    Returns:
        An ``Interval``.
    """
    real, fake = _check_pair(real, fake)
    resamples = _check_positive_int("resamples", resamples)
    level = _check_level(level)
    estimate, resampled = _frechet_resampler(real, fake)
    return _percentile_bootstrap(estimate, resampled, real.shape[0], fake.shape[0], resamples=resamples,
                                 level=level, seed=seed, what="FID bootstrap", real_groups=real_groups,
                                 fake_groups=fake_groups, paired=paired)


def _frechet_resampler(real: Tensor, fake: Tensor) -> tuple[float, Callable[[np.ndarray, np.ndarray], float]]:
    """FID of the full sets, and FID of a resample given the rows it drew (as counts per row)."""
    moments = _FrechetMoments(real, fake)
    n_real, n_fake = real.shape[0], fake.shape[0]

    def resampled(real_rows: np.ndarray, fake_rows: np.ndarray) -> float:
        counts = (torch.as_tensor(np.bincount(rows, minlength=size), dtype=torch.float64, device=real.device)
                  for rows, size in ((real_rows, n_real), (fake_rows, n_fake)))
        return moments.distance(*counts)

    return moments.full(), resampled


@dataclass(frozen=True)
class SplitSets:
    """One random split's pair of feature sets for ``frechet_split_interval``: ``real`` against
    ``fake``, with their patient keys (or None: each row its own unit)."""

    real: Tensor
    fake: Tensor
    real_groups: Groups = None
    fake_groups: Groups = None


def frechet_split_interval(
    splits: Sequence[SplitSets], *, resamples: int = 200, level: float = 0.95, seed: int = 0,
    what: str = "FID bootstrap",
) -> Interval:
    """FID averaged over several random splits, with an interval that pools their bootstraps.

    Where the real side is one random half of a reference (FID against half A, the floor half B
    against A), the draw of the halves moves the FID as much as the sampling noise does. The
    estimate is the mean of
    the splits' FIDs on their full sets; the interval's percentiles are taken over all splits'
    resamples together (``resamples`` per split, split ``i`` seeded ``seed + i``), so it spans
    both the noise within a split and the spread between splits. It is conservative for the
    mean, which is steadier than any one split. One split gives ``frechet_interval`` exactly.

    Args:
        splits: one ``SplitSets`` per split (at least one).
        resamples: bootstrap resamples per split (>= 1).
        level: nominal coverage in (0, 1).
        seed: seeds split ``i``'s resampling with ``seed + i``.
        what: names the bootstrap in the progress log and errors.

    Returns:
        An ``Interval``: ``resamples`` counts all splits' resamples; ``n_real``, ``n_fake`` and
        ``real_units`` are the smallest over the splits.
    """
    if not splits or not all(isinstance(split, SplitSets) for split in splits):
        raise ValueError(f"Expected at least one SplitSets, got {splits!r:.200}.")
    resamples = _check_positive_int("resamples", resamples)
    level = _check_level(level)
    estimates, drawn, sizes = [], [], []
    for i, split in enumerate(splits):
        real, fake = _check_pair(split.real, split.fake)
        estimate, resampled = _frechet_resampler(real, fake)
        values, units = _bootstrap_values(resampled, real.shape[0], fake.shape[0], resamples=resamples,
                                          seed=seed + i, what=f"{what} (split {i + 1} of {len(splits)})",
                                          real_groups=split.real_groups, fake_groups=split.fake_groups)
        estimates.append(estimate)
        drawn.append(values)
        sizes.append((real.shape[0], fake.shape[0], units))
    low, high = _percentiles(np.concatenate(drawn), level)
    n_real, n_fake, units = (min(column) for column in zip(*sizes, strict=True))
    return Interval(estimate=float(np.mean(estimates)), low=low, high=high, n_real=n_real, n_fake=n_fake,
                    resamples=resamples * len(splits), level=level, real_units=units)


def _percentile_bootstrap(
    estimate: float,
    resampled: Callable[[np.ndarray, np.ndarray], float],
    n_real: int,
    n_fake: int,
    *,
    resamples: int,
    level: float,
    seed: int,
    what: str = "bootstrap",
    real_groups: Groups = None,
    fake_groups: Groups = None,
    paired: bool = False,
) -> Interval:
    """Draw the resamples' rows (real then fake, per resample: single rows, or whole groups; with
    ``paired`` one draw for both) and take the percentiles."""
    values, real_units = _bootstrap_values(resampled, n_real, n_fake, resamples=resamples, seed=seed, what=what,
                                           real_groups=real_groups, fake_groups=fake_groups, paired=paired)
    low, high = _percentiles(values, level)
    return Interval(estimate=estimate, low=low, high=high, n_real=n_real, n_fake=n_fake,
                    resamples=resamples, level=level, real_units=real_units)


def _bootstrap_values(
    resampled: Callable[[np.ndarray, np.ndarray], float],
    n_real: int,
    n_fake: int,
    *,
    resamples: int,
    seed: int,
    what: str,
    real_groups: Groups = None,
    fake_groups: Groups = None,
    paired: bool = False,
) -> tuple[np.ndarray, int]:
    """The resamples' values (``_percentile_bootstrap``'s draws) and how many units ``real`` holds."""
    if paired:
        if n_real != n_fake:
            raise ValueError(f"{what}: paired sets must have as many rows, got {n_real} real and {n_fake} fake.")
        if fake_groups is not None and (real_groups is None or not same_groups(real_groups, fake_groups)):
            raise ValueError(f"{what}: paired rows belong to one patient each; expected fake_groups equal to "
                             "real_groups (or None).")
    rng = np.random.default_rng(seed)
    real_units = bootstrap_units(n_real, real_groups, what=f"{what}: real")
    fake_units = real_units if paired else bootstrap_units(n_fake, fake_groups, what=f"{what}: fake")
    values = np.empty(resamples, dtype=np.float64)
    log = ProgressLog(logger, what, resamples, "resamples")
    for i in range(resamples):
        real_rows = draw_units(rng, real_units)
        fake_rows = real_rows if paired else draw_units(rng, fake_units)
        values[i] = resampled(real_rows, fake_rows)
        log.update(i + 1)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ValueError(f"Expected statistic to return finite values, got {bad} NaN/inf of {resamples} resamples.")
    return values, len(real_units)


def real_floor_split(pool: Tensor, n: int, *, seed: int = 0, groups: Groups = None) -> tuple[Tensor, Tensor]:
    """Two disjoint random subsets of ``pool``'s rows for a real-vs-real floor "on the same N".

    FID between two halves of the real data is the smallest FID a perfect generator could reach
    at that N; computing it on as many rows as the fake set makes the two comparable.

    Args:
        pool: ``(N, ...)`` real rows (features or images), ``N >= 4`` (each half needs 2 rows
            for a covariance).
        n: wanted rows per subset (>= 2).
        seed: seeds the draw (``np.random.default_rng``).
        groups: ``(N,)`` patient keys, or None: with them no patient is in both subsets
            (``resampling.disjoint_halves``), so the floor compares patients with other patients,
            as a generator of new patients would be compared.

    Returns:
        ``(first, second)``, each with ``min(n, N // 2)`` rows (fewer when the patients do not
        divide evenly), no row in both, rows kept in ``pool`` order.
    """
    if not isinstance(pool, Tensor) or pool.ndim < 1:
        shape = _shape(pool) if isinstance(pool, Tensor) else type(pool).__name__
        raise ValueError(f"Expected pool to be a tensor of shape (N, ...), got {shape}.")
    if pool.shape[0] < MIN_FLOOR_POOL:
        raise ValueError(
            f"Expected pool with at least {MIN_FLOOR_POOL} rows (two disjoint subsets of >= 2), got {_shape(pool)}."
        )
    n = _check_positive_int("n", n, minimum=2)
    first, second = disjoint_halves(pool.shape[0], n, np.random.default_rng(seed), groups)
    return pool[torch.as_tensor(first, device=pool.device)], pool[torch.as_tensor(second, device=pool.device)]


def summarise(values: Tensor, *, resamples: int = 200, level: float = 0.95, seed: int = 0,
              groups: Groups = None) -> dict[str, float]:
    """Mean of a per-image metric with a percentile-bootstrap interval of the mean.

    With ``groups`` (a patient key per value) each resample draws as many patients as there are,
    with replacement, each with all its values (a cluster bootstrap, ``synthmed.metrics.resampling``):
    the paired SSIM of two slices of one brain is not two independent observations. Without
    groups, the values are drawn one by one.

    Args:
        values: ``(N,)`` finite per-image scores (e.g. ``paired_metrics(...)["ssim"]``), N >= 1.
        resamples: number of bootstrap resamples (>= 1).
        level: nominal coverage in (0, 1).
        seed: seeds the resampling (``np.random.default_rng``).
        groups: ``(N,)`` patient keys, or None (each value its own unit).

    Returns:
        ``{"mean", "low", "high", "n"}`` (n as a float, for MLflow), and with ``groups``
        ``"patients"``: how many there are.
    """
    if not isinstance(values, Tensor) or values.ndim != 1 or values.shape[0] < 1:
        shape = _shape(values) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"Expected values with shape (N,) and N >= 1, got {shape}.")
    resamples = _check_positive_int("resamples", resamples)
    level = _check_level(level)
    array = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(
            f"Expected finite values, got {bad} NaN/inf of {array.size} (PSNR of identical images is inf)."
        )
    rng = np.random.default_rng(seed)
    if groups is None:
        means = array[rng.integers(0, array.size, size=(resamples, array.size))].mean(axis=1)
    else:  # resamples of different sizes: one mean each
        units = bootstrap_units(array.size, groups, what="paired bootstrap")
        means = np.array([array[draw_units(rng, units)].mean() for _ in range(resamples)])
    low, high = _percentiles(means, level)
    out = {"mean": float(array.mean()), "low": low, "high": high, "n": float(array.size)}
    if groups is not None:
        out["patients"] = float(n_groups(groups))
    return out


# ------------------------------------------------------------------ PRDC


# The chunked distance computations hold one block of rows against a whole set at a time:
# about this many bytes of float64 distances, whatever N. The peak is about 10 times this
# (cdist's and kthvalue's temporaries, the masks): measured 79 MiB above the inputs at 8 MiB,
# 246 MiB at 32 MiB (N = 8,000). Blocks of a few hundred rows keep cdist vectorised.
DISTANCE_BLOCK_BYTES = 8 * 2**20


def _row_blocks(rows: int, columns: int, block_bytes: int) -> Iterator[slice]:
    """Slices of ``rows`` so that each block of ``(block, columns)`` float64 fits ``block_bytes``."""
    size = max(1, block_bytes // (8 * max(columns, 1)))
    return _batches(rows, size)


def _knn_radii(features: Tensor, k: int, *, block_bytes: int = DISTANCE_BLOCK_BYTES,
              advance: Callable[[int], None] | None = None) -> Tensor:
    """``(N,)`` distance from each row to its k-th nearest other row (itself excluded once).

    Blocks of rows against the whole set: memory is one block plus the ``(N,)`` result, not
    the ``N x N`` matrix. Each block holds whole rows, so the k-th value of a block's row is the
    row's radius (no merging across blocks).
    """
    radii = torch.empty(features.shape[0], dtype=features.dtype, device=features.device)
    for rows in _row_blocks(features.shape[0], features.shape[0], block_bytes):
        distances = _distances(features[rows], features)
        # Exclude the row itself (its own column), once: an exact duplicate elsewhere still counts.
        own = torch.arange(rows.stop - rows.start, device=features.device)
        distances[own, own + rows.start] = math.inf
        radii[rows] = distances.kthvalue(k, dim=1).values
        if advance is not None:
            advance(rows.stop - rows.start)
    return radii


def _distances(a: Tensor, b: Tensor) -> Tensor:
    # The direct (not matrix-product) Euclidean form: d(x, x) is exactly 0 and the same pair
    # gets the same distance in every call and every block, so ties on the ball boundary are
    # decided consistently.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def precision_recall_density_coverage(
    real: Tensor, fake: Tensor, *, k: int = 5, block_bytes: int = DISTANCE_BLOCK_BYTES
) -> dict[str, float]:
    """Precision, recall, density and coverage of Naeem et al., ICML 2020 (PRDC).

    With ``r(x)`` the Euclidean distance from ``x`` to its k-th nearest neighbour within its
    own set (itself excluded) and ``B(x, r) = {y : ||y - x|| <= r}``:

    - precision = 1/M sum_j 1[Y_j in some B(X_i, r(X_i))]   (Kynkäänniemi et al. 2019)
    - recall    = 1/N sum_i 1[X_i in some B(Y_j, r(Y_j))]   (Kynkäänniemi et al. 2019)
    - density   = 1/(kM) sum_j sum_i 1[Y_j in B(X_i, r(X_i))]   (Naeem et al. eq. 3)
    - coverage  = 1/N sum_i 1[some Y_j in B(X_i, r(X_i))]   (Naeem et al. eq. 4)

    Density and coverage use only the real k-NN balls (robust to fake outliers). For fakes drawn
    from the real distribution, E[density] = 1. Fakes that are exact copies of the real set give
    density (k + 1) / k: each real ball holds its own centre and its k neighbours, so the M = N
    copies fall into balls N (k + 1) times (ties aside). Density above 1 hints at memorisation.

    Args:
        real: ``(N, D)`` finite float features.
        fake: ``(M, D)`` finite float features.
        k: neighbours for the radii, ``1 <= k < N`` and ``k < M``.
        block_bytes: about how many bytes of distances one block of rows may hold; memory is
            ``O(block_bytes + (N + M))``, not the ``N x M`` and ``N x N`` matrices, and the
            scores do not depend on it.

    Returns:
        ``{"precision", "recall", "density", "coverage"}``; density can exceed 1.
    """
    real, fake = _check_pair(real, fake)
    k = _check_positive_int("k", k)
    for name, rows in (("real", real), ("fake", fake)):
        if k >= rows.shape[0]:
            raise ValueError(
                f"Expected k smaller than the number of {name} rows (a point's k-NN excludes itself), "
                f"got k={k} for {name} of shape {_shape(rows)}."
            )
    block_bytes = _check_positive_int("block_bytes", block_bytes)
    real = real.detach().to(torch.float64)
    fake = fake.detach().to(device=real.device, dtype=torch.float64)
    # Progress in rows of distances done: the real radii (N), the fake radii (M), real vs fake (N).
    log = ProgressLog(logger, "PRDC", 2 * real.shape[0] + fake.shape[0], "rows")
    done = [0]

    def advance(rows: int) -> None:
        done[0] += rows
        log.update(done[0])

    real_radii = _knn_radii(real, k, block_bytes=block_bytes, advance=advance)  # (N,)
    fake_radii = _knn_radii(fake, k, block_bytes=block_bytes, advance=advance)  # (M,)
    fake_in_a_real_ball = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)
    hits = real_covered = real_recalled = 0
    # Blocks of real rows against all fakes: one (block, M) slice of the real-fake distances
    # at a time; every score is a sum or an "any" over rows, so the blocks add up exactly.
    for rows in _row_blocks(real.shape[0], fake.shape[0], block_bytes):
        real_fake = _distances(real[rows], fake)  # (block, M)
        in_real_ball = real_fake <= real_radii[rows, None]  # [i, j]: Y_j in B(X_i, r(X_i))
        fake_in_a_real_ball |= in_real_ball.any(dim=0)
        hits += int(in_real_ball.sum())
        real_covered += int(in_real_ball.any(dim=1).sum())
        real_recalled += int((real_fake <= fake_radii[None, :]).any(dim=1).sum())  # X_i in some B(Y_j, r(Y_j))
        advance(rows.stop - rows.start)
    n_real, n_fake = real.shape[0], fake.shape[0]
    return {
        "precision": float(fake_in_a_real_ball.double().mean()),
        "recall": real_recalled / n_real,
        "density": hits / (k * n_fake),
        "coverage": real_covered / n_real,
    }


# ------------------------------------------------------------------ SSIM family


def _odd_at_most(value: int) -> int:
    return value if value % 2 else value - 1


def _gaussian_sigma(window_px: int) -> float:
    """The Gaussian sigma whose torchmetrics window is ``window_px`` wide.

    torchmetrics derives the Gaussian window from sigma alone, ``2 * int(3.5 sigma + 0.5) + 1``
    (functional/image/ssim.py; its ``kernel_size`` only sizes the uniform window and the MS-SSIM
    size checks). Keeping Wang's ratio, sigma = 1.5 * window / 11, gives exactly ``window_px``
    for every odd window from 3 to 11 (checked in the tests).
    """
    return WANG_SIGMA_PX * window_px / WANG_WINDOW_PX


def _ssim_window(height: int, width: int) -> int:
    """Gaussian window for single-scale SSIM: the largest odd size <= min(11, H, W)."""
    window = _odd_at_most(min(WANG_WINDOW_PX, height, width))
    if window < MIN_WINDOW_PX:
        raise ValueError(f"Expected images at least {MIN_WINDOW_PX} px high and wide for SSIM, got {height} x {width}.")
    return window


def _ms_ssim_settings(height: int, width: int) -> tuple[int, tuple[float, ...]]:
    """Gaussian window and scale exponents of MS-SSIM for ``height x width`` images.

    Wang et al. 2003 use 5 scales and an 11 px window, sized for ~256 px images (the coarsest
    scale is 16 px). For smaller images, with ``side = min(H, W)``:

    1. window = the largest odd size <= min(11, side // 2), so that at least two scales hold it;
       at least 3 px.
    2. scales = the most of Wang's 5 whose coarsest image, ``side // 2**(scales - 1)`` (2 x 2
       average pooling between scales), still holds the window.
    3. torchmetrics 1.9 also requires ``side >= 2**scales`` and
       ``side // (scales - 1)**2 > window - 1``; drop coarse scales until both hold.
    4. betas = Wang's first ``scales`` exponents, renormalised to sum to 1.

    16 px -> 7 px window, 2 scales; 32 px -> 11 px, 2 scales; 64 px -> 11 px, 3 scales;
    256 px -> 11 px, 5 scales (the standard setting).
    """
    side = min(height, width)
    window = _odd_at_most(min(WANG_WINDOW_PX, side // 2))
    if window < MIN_WINDOW_PX:
        raise ValueError(
            f"Expected images at least {2 * MIN_WINDOW_PX} px high and wide for MS-SSIM, got {height} x {width}."
        )
    scales = 1
    while scales < len(WANG_BETAS) and side // 2**scales >= window:
        scales += 1
    while scales > 1 and not (side >= 2**scales and side // (scales - 1) ** 2 > window - 1):
        scales -= 1
    kept = WANG_BETAS[:scales]
    total = sum(kept)
    return window, tuple(float(beta / total) for beta in kept)


def _pair_indices(n_images: int, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Distinct unordered pairs ``i < j``: all of them, or ``max_pairs`` drawn without replacement."""
    total = n_images * (n_images - 1) // 2
    if total <= max_pairs:
        first, second = np.triu_indices(n_images, k=1)
        return first, second
    # Pair number p <-> (i, j) with p = j (j - 1) / 2 + i, 0 <= i < j; decoded with exact
    # integer square roots, so no O(N^2) table is built for large sets.
    codes = rng.choice(total, size=max_pairs, replace=False)
    first = np.empty(max_pairs, dtype=np.int64)
    second = np.empty(max_pairs, dtype=np.int64)
    for index, code in enumerate(codes.tolist()):
        j = (1 + math.isqrt(1 + 8 * code)) // 2
        first[index], second[index] = code - j * (j - 1) // 2, j
    return first, second


def _working_dtype(images: Tensor) -> torch.dtype:
    return torch.promote_types(images.dtype, torch.float32)


def _batches(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def ms_ssim_diversity(
    images: Tensor,
    *,
    max_pairs: int = 200,
    seed: int = 0,
    data_range: float = 2.0,
    normalize: Literal["relu", "simple"] = "relu",
    batch_pairs: int = 256,
) -> float:
    """Mean MS-SSIM between distinct random pairs of a set: lower = more diverse.

    The intra-set diversity score of Odena et al., ICML 2017 (AC-GAN): compare it with the same
    score on the real images at the same size. Pairs are all unordered pairs ``i < j`` when
    there are at most ``max_pairs`` of them, else ``max_pairs`` distinct pairs drawn with
    ``np.random.default_rng(seed)``. Images are shifted to ``[0, data_range]`` (see the module
    docstring); window and scales follow ``_ms_ssim_settings`` (16-64 px images cannot hold
    Wang's 5 scales of an 11 px window).

    Negative contrast-structure terms: MS-SSIM raises each scale's term to a fractional power
    beta, which is NaN for a negative term (anti-correlated structure at a coarse scale; common
    for unrelated images). ``normalize="relu"`` (default) clamps such terms to 0, as
    ``tf.image.ssim_multiscale`` does: scores where Wang's definition holds are unchanged and
    pairs with opposite structure score 0. ``"simple"`` maps every term to ``(x + 1) / 2``:
    smooth, but it moves all scores (unrelated noise ~0.65 instead of ~0.1) so they are not
    comparable to published MS-SSIM values.

    Args:
        images: ``(N, C, H, W)`` float in ``[-data_range / 2, data_range / 2]``, C in {1, 3},
            N >= 2, H and W >= 6.
        max_pairs: the most pairs to compare (>= 1).
        seed: seeds the pair draw.
        data_range: the width of the value range (2.0 for ``[-1, 1]``).
        normalize: ``"relu"`` or ``"simple"``, see above.
        batch_pairs: pairs per MS-SSIM call (memory only; the result does not depend on it).

    Returns:
        The mean MS-SSIM in [0, 1] (1 when all images are identical).
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    data_range = _check_data_range(data_range)
    images = _check_images("images", images, data_range=data_range, min_images=2)
    max_pairs = _check_positive_int("max_pairs", max_pairs)
    batch_pairs = _check_positive_int("batch_pairs", batch_pairs)
    if normalize not in MS_SSIM_NORMALIZE:
        raise ValueError(f"Expected normalize to be one of {MS_SSIM_NORMALIZE}, got {normalize!r}.")
    window, betas = _ms_ssim_settings(images.shape[2], images.shape[3])
    first, second = _pair_indices(images.shape[0], max_pairs, np.random.default_rng(seed))
    # At least float32 (float64 inputs stay float64, but torch's CPU grouped convolution is
    # ~10x slower in float64); identical images still score 1 to ~1e-6 in float32.
    shifted = images.detach().to(_working_dtype(images)) + data_range / 2.0
    first_t = torch.as_tensor(first, device=images.device)
    second_t = torch.as_tensor(second, device=images.device)
    scores = []
    for rows in _batches(len(first), batch_pairs):
        scores.append(multiscale_structural_similarity_index_measure(
            shifted[first_t[rows]], shifted[second_t[rows]], gaussian_kernel=True,
            sigma=_gaussian_sigma(window), kernel_size=window, reduction="none", data_range=data_range,
            betas=betas, normalize=normalize,
        ))
    per_pair = torch.cat(scores)
    if torch.isnan(per_pair).any():
        bad = int(torch.isnan(per_pair).sum())
        raise RuntimeError(f"MS-SSIM returned NaN for {bad} of {len(per_pair)} pairs (normalize={normalize!r}).")
    logger.debug("MS-SSIM diversity on %d pairs, %d px window, %d scales.", len(first), window, len(betas))
    return float(per_pair.mean())


def summarise_paired(scores: Mapping[str, Tensor], *, resamples: int = 200, level: float = 0.95,
                     seed: int = 0, groups: Groups = None) -> dict[str, float]:
    """`summarise` of each paired score (`paired_metrics`, or a volume's), flattened as the
    metrics files and the report name them: ``paired_<name>``, ``paired_<name>_low``,
    ``paired_<name>_high``, ``paired_<name>_n``; with ``groups`` (the patient of each pair's real
    image) the interval draws patients and ``paired_<name>_patients`` says how many there are."""
    out: dict[str, float] = {}
    for name, values in scores.items():
        out |= flat_summary(f"paired_{name}", summarise(values, resamples=resamples, level=level, seed=seed,
                                                         groups=groups))
    return out


def flat_summary(prefix: str, stats: Mapping[str, float]) -> dict[str, float]:
    """A `summarise` result as metrics keys: ``<prefix>`` (the mean), ``<prefix>_low``, ``_high``,
    ``_n`` and, where it drew patients, ``_patients``."""
    out = {prefix: stats["mean"]} | {f"{prefix}_{key}": stats[key] for key in ("low", "high", "n")}
    if "patients" in stats:
        out[f"{prefix}_patients"] = stats["patients"]
    return out


def paired_metrics(fake: Tensor, real: Tensor, *, data_range: float = 2.0) -> dict[str, Tensor]:
    """Per-image MSE, SSIM and PSNR of each fake image against its real counterpart.

    For mask-conditional generators: ``fake[i]`` was generated from the mask of ``real[i]``.
    SSIM uses a Gaussian window of the largest odd size <= min(11, H, W) with sigma scaled as
    Wang's 11 px / 1.5 (see ``_gaussian_sigma``) and shifts the images to ``[0, data_range]``
    (module docstring). PSNR is ``10 log10(data_range^2 / MSE)``, inf for identical images.

    Args:
        fake: ``(N, C, H, W)`` float in ``[-data_range / 2, data_range / 2]``, C in {1, 3}.
        real: the same shape and range.
        data_range: the width of the value range (2.0 for ``[-1, 1]``).

    Returns:
        ``{"mse", "ssim", "psnr"}``, each ``(N,)`` float64 on the inputs' device.
    """
    data_range = _check_data_range(data_range)
    fake = _check_images("fake", fake, data_range=data_range)
    real = _check_images("real", real, data_range=data_range)
    if fake.shape != real.shape:
        raise ValueError(
            f"Expected fake and real with identical shapes, got fake {_shape(fake)} and real {_shape(real)}."
        )
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
    from torchmetrics.functional.regression import mean_squared_error

    n_images = fake.shape[0]
    # MSE and PSNR in float64 (cheap, and exact enough to check PSNR against a known noise level);
    # SSIM in at least float32 (the grouped convolution is slow in float64 on CPU).
    fake64 = fake.detach().to(torch.float64)
    real64 = real.detach().to(device=fake.device, dtype=torch.float64)
    # num_outputs = N on (pixels, N) views: one MSE per image.
    mse = mean_squared_error(fake64.flatten(1).T, real64.flatten(1).T, num_outputs=n_images).reshape(n_images)
    psnr = peak_signal_noise_ratio(fake64, real64, data_range=data_range, reduction="none", dim=(1, 2, 3))
    dtype = _working_dtype(fake)
    window = _ssim_window(fake.shape[2], fake.shape[3])
    shift = data_range / 2.0  # to [0, data_range]: see the module docstring
    ssim = structural_similarity_index_measure(
        fake.detach().to(dtype) + shift, real.detach().to(device=fake.device, dtype=dtype) + shift,
        gaussian_kernel=True, sigma=_gaussian_sigma(window), kernel_size=window, reduction="none",
        data_range=data_range,
    )
    return {"mse": mse, "ssim": ssim.reshape(n_images).to(torch.float64), "psnr": psnr.reshape(n_images)}
