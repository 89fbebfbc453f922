"""Tests for synthmed.metrics.fidelity: FID/KID on precomputed features, bootstrap intervals,
real-vs-real floors, PRDC, MS-SSIM diversity and paired scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)
from torchmetrics.image.fid import FrechetInceptionDistance

from synthmed.metrics.fidelity import (
    WANG_BETAS,
    Interval,
    PrecomputedFeatures,
    SplitSets,
    _gaussian_sigma,
    _knn_radii,
    _ms_ssim_settings,
    _pair_indices,
    bootstrap_interval,
    frechet_distance,
    frechet_interval,
    frechet_split_interval,
    kernel_distance,
    ms_ssim_diversity,
    paired_metrics,
    precision_recall_density_coverage,
    real_floor_split,
    summarise,
    summarise_paired,
)


def gaussian(n: int, d: int, seed: int, *, shift: float = 0.0) -> torch.Tensor:
    """``(n, d)`` float32 standard normal features plus ``shift``."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def noise_images(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """``(n, C, size, size)`` float32 uniform noise in [-1, 1]."""
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def smooth_image(channels: int, size: int) -> torch.Tensor:
    """``(1, C, size, size)`` float32 in [-0.5, 0.5]: a smooth, deterministic pattern."""
    yy, xx = torch.meshgrid(torch.linspace(0, 3, size), torch.linspace(0, 2, size), indexing="ij")
    image = 0.5 * torch.sin(yy + 0.7 * xx)
    return torch.stack([image * (1 - 0.2 * c) for c in range(channels)])[None]


# ------------------------------------------------------------------ FID


def reference_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) (Heusel et al. 2017) with numpy/scipy."""
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root))


def test_fid_of_a_set_with_itself_is_zero() -> None:
    x = gaussian(200, 16, seed=0)
    assert abs(frechet_distance(x, x)) < 1e-4


def test_fid_matches_the_closed_form_reference() -> None:
    real = gaussian(150, 12, seed=1)
    fake = gaussian(120, 12, seed=2) * 1.3 + 0.2
    expected = reference_fid(real.double().numpy(), fake.double().numpy())
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-3)


def test_fid_grows_with_a_mean_shift() -> None:
    real = gaussian(200, 8, seed=3)
    fids = [frechet_distance(real, gaussian(200, 8, seed=4, shift=shift)) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert fids == sorted(fids)
    # A shift of s in each of 8 dimensions adds 8 s^2 to the mean term.
    assert fids[-1] - fids[0] == pytest.approx(8 * 2.0**2, rel=0.1)


def torchmetrics_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The previous implementation of ``frechet_distance``, kept as the oracle: torchmetrics' FID."""
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), normalize=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


# (N_real, N_fake, D): more rows than dimensions (the D x D square-root form) and fewer (the
# N x M singular-value form, as with 2048-d backbones on a few hundred images).
FID_SHAPES = [(150, 120, 12), (40, 30, 64), (25, 60, 40)]


@pytest.mark.parametrize(("n_real", "n_fake", "dim"), FID_SHAPES)
def test_fid_equals_the_torchmetrics_value(n_real: int, n_fake: int, dim: int) -> None:
    real = gaussian(n_real, dim, seed=40) * 2.0 + 3.0
    fake = gaussian(n_fake, dim, seed=41, shift=0.3) * 1.5 + 3.0
    assert frechet_distance(real, fake) == pytest.approx(torchmetrics_fid(real, fake), rel=1e-6)


@pytest.mark.parametrize(("n_real", "n_fake", "dim"), FID_SHAPES)
def test_frechet_interval_equals_the_bootstrap_of_torchmetrics_fid(n_real: int, n_fake: int, dim: int) -> None:
    # Same seed, same rows drawn: the weighted sufficient statistics must give each resample's
    # FID as computed by torchmetrics on the copied rows (the previous implementation).
    real, fake = gaussian(n_real, dim, seed=42), gaussian(n_fake, dim, seed=43, shift=0.5)
    fast = frechet_interval(real, fake, resamples=15, level=0.9, seed=7)
    slow = bootstrap_interval(torchmetrics_fid, real, fake, resamples=15, level=0.9, seed=7)
    for name in ("estimate", "low", "high"):
        assert getattr(fast, name) == pytest.approx(getattr(slow, name), rel=1e-6), name
    assert (fast.n_real, fast.n_fake, fast.resamples, fast.level) == (n_real, n_fake, 15, 0.9)


def test_bootstrap_interval_of_fid_uses_the_sufficient_statistics() -> None:
    real, fake = gaussian(30, 5, seed=44), gaussian(35, 5, seed=45, shift=0.2)
    assert bootstrap_interval(frechet_distance, real, fake, resamples=10, seed=2) == \
        frechet_interval(real, fake, resamples=10, seed=2)


def test_precomputed_features_size_the_torchmetrics_states_without_a_dummy_image() -> None:
    # Without num_features torchmetrics would push a (1, 3, 299, 299) dummy image through the
    # module and size its states by the last axis (299).
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(7))
    assert metric.real_features_sum.shape == (7,)
    real, fake = gaussian(50, 7, seed=5).double(), gaussian(40, 7, seed=6).double()
    metric.update(real, real=True)
    metric.update(fake, real=False)
    value = metric.compute()
    assert value.dtype == torch.float64
    assert float(value) == pytest.approx(frechet_distance(real, fake), rel=1e-9)


def test_precomputed_features_reject_images() -> None:
    with pytest.raises(ValueError, match=r"\(N, 7\), got \(2, 3, 299, 299\)"):
        PrecomputedFeatures(7)(torch.zeros(2, 3, 299, 299))


@pytest.mark.parametrize(
    ("real", "fake", "message"),
    [
        (torch.zeros(10), torch.zeros(10, 4), r"real with shape \(N, D\), got \(10,\)"),
        (torch.zeros(10, 4), torch.zeros(10, 5), r"same feature size D, got real \(10, 4\) and fake \(10, 5\)"),
        (torch.zeros(10, 4), torch.zeros(1, 4), r"fake with at least 2 rows .*got \(1, 4\)"),
        (torch.full((10, 4), math.nan), torch.zeros(10, 4), r"finite real, got 40 NaN/inf values in shape \(10, 4\)"),
    ],
)
def test_feature_validation_names_the_argument_and_shape(real: torch.Tensor, fake: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frechet_distance(real, fake)


# ------------------------------------------------------------------ KID


def test_kid_is_near_zero_for_the_same_features_and_large_for_shifted() -> None:
    real = gaussian(120, 16, seed=7)
    same, _ = kernel_distance(real, real, subset_size=50, subsets=20)
    shifted, _ = kernel_distance(real, gaussian(120, 16, seed=8, shift=1.0), subset_size=50, subsets=20)
    # The cross term of identical sets contains k(x, x) for shared rows, so "same" is a little
    # negative rather than exactly 0; a unit mean shift is two orders of magnitude larger.
    assert abs(same) < 0.2
    assert shifted > 3.0
    assert shifted > 20 * abs(same)


def test_kid_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone() -> None:
    real, fake = gaussian(80, 8, seed=9), gaussian(80, 8, seed=10)
    torch.manual_seed(123)
    untouched = torch.rand(1)
    torch.manual_seed(123)
    first = kernel_distance(real, fake, subset_size=30, subsets=10, seed=4)
    assert torch.equal(torch.rand(1), untouched)  # the global stream was neither reseeded nor advanced
    torch.manual_seed(321)
    assert kernel_distance(real, fake, subset_size=30, subsets=10, seed=4) == first
    assert kernel_distance(real, fake, subset_size=30, subsets=10, seed=5) != first


def test_kid_clips_the_subset_size_to_the_smaller_set() -> None:
    real, fake = gaussian(30, 8, seed=11), gaussian(20, 8, seed=12)
    clipped = kernel_distance(real, fake, subset_size=100, subsets=5)
    assert clipped == kernel_distance(real, fake, subset_size=20, subsets=5)
    # Both sets clipped to their full size: every subset is the whole set, std 0.
    assert kernel_distance(fake, fake[:20].flip(0), subset_size=100, subsets=5)[1] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ bootstrap, floors, summaries


def mean_difference(real: torch.Tensor, fake: torch.Tensor) -> float:
    return float(fake.mean() - real.mean())


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible() -> None:
    real, fake = gaussian(60, 3, seed=13), gaussian(40, 3, seed=14, shift=0.5)
    interval = bootstrap_interval(mean_difference, real, fake, resamples=100, level=0.9, seed=3)
    assert isinstance(interval, Interval)
    assert interval.estimate == pytest.approx(mean_difference(real, fake))
    assert interval.low <= interval.estimate <= interval.high
    assert interval.low < interval.high
    assert (interval.n_real, interval.n_fake, interval.resamples, interval.level) == (60, 40, 100, 0.9)
    assert bootstrap_interval(mean_difference, real, fake, resamples=100, level=0.9, seed=3) == interval
    assert bootstrap_interval(mean_difference, real, fake, resamples=100, level=0.9, seed=4) != interval


def test_bootstrap_interval_of_fid_reports_the_full_set_estimate() -> None:
    real, fake = gaussian(40, 4, seed=15), gaussian(40, 4, seed=16, shift=1.0)
    interval = bootstrap_interval(frechet_distance, real, fake, resamples=20)
    assert interval.estimate == frechet_distance(real, fake)
    assert 0.0 < interval.low <= interval.high


@pytest.mark.parametrize("level", [0.0, 1.0, 95])
def test_bootstrap_interval_rejects_a_bad_level(level: float) -> None:
    with pytest.raises(ValueError, match=rf"level to be a number in \(0, 1\).*got {level}"):
        bootstrap_interval(mean_difference, torch.zeros(3, 1), torch.zeros(3, 1), level=level)


def test_real_floor_split_gives_disjoint_subsets_of_the_requested_size() -> None:
    pool = torch.arange(21, dtype=torch.float32)[:, None].repeat(1, 3)  # row i holds i
    first, second = real_floor_split(pool, 6, seed=1)
    assert first.shape == second.shape == (6, 3)
    ids_first, ids_second = set(first[:, 0].tolist()), set(second[:, 0].tolist())
    assert len(ids_first) == len(ids_second) == 6
    assert not ids_first & ids_second
    again = real_floor_split(pool, 6, seed=1)
    assert torch.equal(again[0], first) and torch.equal(again[1], second)
    # n larger than half the pool: each subset takes N // 2 rows.
    big_first, big_second = real_floor_split(pool, 100)
    assert len(big_first) == len(big_second) == 10
    assert not set(big_first[:, 0].tolist()) & set(big_second[:, 0].tolist())


def test_real_floor_split_rejects_a_tiny_pool() -> None:
    with pytest.raises(ValueError, match=r"pool with at least 4 rows.*got \(3, 5\)"):
        real_floor_split(torch.zeros(3, 5), 2)


def test_summarise_bootstraps_the_mean() -> None:
    values = torch.linspace(0.0, 1.0, 41)
    summary = summarise(values, resamples=300, seed=2)
    assert set(summary) == {"mean", "low", "high", "n"}
    assert summary["n"] == 41.0
    assert summary["mean"] == pytest.approx(0.5)
    assert summary["low"] < summary["mean"] < summary["high"]
    # The standard error of the mean is 0.30 / sqrt(41) ~ 0.047: a 95 % interval spans ~0.18.
    assert 0.1 < summary["high"] - summary["low"] < 0.3
    assert summarise(values, resamples=300, seed=2) == summary


def test_summarise_paired_names_each_score_as_the_metrics_files_do() -> None:
    scores = {"ssim": torch.linspace(0.0, 1.0, 41), "psnr": torch.full((5,), 20.0)}
    out = summarise_paired(scores, resamples=300, seed=2)
    assert set(out) == {f"paired_{n}{s}" for n in scores for s in ("", "_low", "_high", "_n")}
    ssim = summarise(scores["ssim"], resamples=300, seed=2)
    assert (out["paired_ssim"], out["paired_ssim_low"], out["paired_ssim_high"], out["paired_ssim_n"]) == (
        ssim["mean"], ssim["low"], ssim["high"], ssim["n"])
    assert out["paired_psnr"] == 20.0 and out["paired_psnr_n"] == 5.0


def test_summarise_rejects_non_finite_values_and_wrong_shapes() -> None:
    with pytest.raises(ValueError, match=r"finite values, got 1 NaN/inf of 3"):
        summarise(torch.tensor([1.0, math.inf, 2.0]))
    with pytest.raises(ValueError, match=r"values with shape \(N,\).*got \(2, 2\)"):
        summarise(torch.zeros(2, 2))


# ------------------------------------------------------------------ PRDC


def reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al. 2020, Sec. 3, written with explicit loops over points."""

    def radius(points: np.ndarray, i: int) -> float:
        others = [np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if j != i]
        return sorted(others)[k - 1]

    real_r = [radius(real, i) for i in range(len(real))]
    fake_r = [radius(fake, j) for j in range(len(fake))]
    dist = [[float(np.linalg.norm(x - y)) for y in fake] for x in real]
    n, m = len(real), len(fake)
    precision = sum(any(dist[i][j] <= real_r[i] for i in range(n)) for j in range(m)) / m
    recall = sum(any(dist[i][j] <= fake_r[j] for j in range(m)) for i in range(n)) / n
    density = sum(dist[i][j] <= real_r[i] for i in range(n) for j in range(m)) / (k * m)
    coverage = sum(any(dist[i][j] <= real_r[i] for j in range(m)) for i in range(n)) / n
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_prdc_matches_a_loop_reference() -> None:
    real, fake = gaussian(30, 3, seed=17), gaussian(25, 3, seed=18, shift=0.4) * 1.5
    expected = reference_prdc(real.double().numpy(), fake.double().numpy(), k=3)
    assert precision_recall_density_coverage(real, fake, k=3) == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected["precision"] < 1.0 and 0.0 < expected["coverage"] < 1.0  # a non-trivial case


def dense_knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """The previous dense implementation (the whole N x N matrix), kept as the oracle."""
    distances = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist")
    distances.fill_diagonal_(math.inf)
    return distances.kthvalue(k, dim=1).values


def dense_prdc(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """The previous dense PRDC (N x N, M x M and N x M float64 matrices), kept as the oracle."""
    real, fake = real.double(), fake.double()
    real_radii, fake_radii = dense_knn_radii(real, k), dense_knn_radii(fake, k)
    real_fake = torch.cdist(real, fake, compute_mode="donot_use_mm_for_euclid_dist")
    in_real_ball = real_fake <= real_radii[:, None]
    in_fake_ball = real_fake <= fake_radii[None, :]
    return {
        "precision": float(in_real_ball.any(dim=0).double().mean()),
        "recall": float(in_fake_ball.any(dim=1).double().mean()),
        "density": float(in_real_ball.double().sum() / (k * fake.shape[0])),
        "coverage": float(in_real_ball.any(dim=1).double().mean()),
    }


# 8 * 7 bytes: blocks of one row against sets of 7+ rows; 8 * 50 * 3: a few rows per block, the
# last one short; the default: one block.
@pytest.mark.parametrize("block_bytes", [8 * 7, 8 * 50 * 3 + 5, 32 * 2**20])
def test_chunked_prdc_and_radii_equal_the_dense_computation(block_bytes: int) -> None:
    real, fake = gaussian(90, 4, seed=50), gaussian(70, 4, seed=51, shift=0.3) * 1.2
    # Exact duplicates inside a set (radius 0 for small k) and shared by both sets (ties on the
    # ball boundary).
    real = torch.cat([real, real[:6], fake[:5]])
    fake = torch.cat([fake, fake[10:13]])
    for k in (1, 3, 5):
        got = precision_recall_density_coverage(real, fake, k=k, block_bytes=block_bytes)
        assert got == pytest.approx(dense_prdc(real, fake, k), abs=1e-6), k
        radii = _knn_radii(real.double(), k, block_bytes=block_bytes)
        assert torch.allclose(radii, dense_knn_radii(real.double(), k), rtol=0, atol=1e-6), k


def test_prdc_rejects_a_bad_block_size() -> None:
    with pytest.raises(ValueError, match=r"block_bytes to be an int >= 1, got 0"):
        precision_recall_density_coverage(gaussian(10, 3, seed=52), gaussian(10, 3, seed=53), block_bytes=0)


def test_prdc_of_identical_sets() -> None:
    x = gaussian(100, 6, seed=19)
    scores = precision_recall_density_coverage(x, x, k=5)
    assert (scores["precision"], scores["recall"], scores["coverage"]) == (1.0, 1.0, 1.0)
    # Each real ball holds its centre and its k neighbours: N (k + 1) hits over k N.
    assert scores["density"] == pytest.approx(6 / 5)


def test_prdc_density_is_about_one_for_samples_of_the_same_distribution() -> None:
    scores = precision_recall_density_coverage(gaussian(600, 4, seed=20), gaussian(600, 4, seed=21), k=5)
    assert scores["density"] == pytest.approx(1.0, abs=0.1)
    assert scores["coverage"] > 0.9


def test_prdc_of_far_apart_sets_is_zero() -> None:
    scores = precision_recall_density_coverage(gaussian(40, 5, seed=22), gaussian(40, 5, seed=23, shift=100.0))
    assert scores == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_rejects_k_not_smaller_than_the_set() -> None:
    with pytest.raises(ValueError, match=r"got k=10 for fake of shape \(10, 3\)"):
        precision_recall_density_coverage(gaussian(20, 3, seed=26), gaussian(10, 3, seed=27), k=10)


# ------------------------------------------------------------------ MS-SSIM diversity


@pytest.mark.parametrize("window", [3, 5, 7, 9, 11])
def test_gaussian_sigma_gives_the_window_torchmetrics_builds(window: int) -> None:
    # torchmetrics 1.9 (functional/image/ssim.py) sizes the Gaussian window from sigma alone.
    assert int(3.5 * _gaussian_sigma(window) + 0.5) * 2 + 1 == window


@pytest.mark.parametrize(
    ("size", "window", "scales"), [(6, 3, 2), (16, 7, 2), (32, 11, 2), (64, 11, 3), (88, 11, 3), (256, 11, 5)]
)
def test_ms_ssim_settings_fit_the_image(size: int, window: int, scales: int) -> None:
    got_window, betas = _ms_ssim_settings(size, size)
    assert (got_window, len(betas)) == (window, scales)
    assert sum(betas) == pytest.approx(1.0)
    # Truncated Wang et al. exponents keep their ratios.
    assert betas[-1] / betas[0] == pytest.approx(WANG_BETAS[scales - 1] / WANG_BETAS[0])


def test_ms_ssim_settings_reject_tiny_images() -> None:
    with pytest.raises(ValueError, match=r"at least 6 px .*got 5 x 8"):
        _ms_ssim_settings(5, 8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32, 64])
def test_ms_ssim_diversity_is_one_for_identical_and_low_for_noise(size: int, channels: int) -> None:
    same = smooth_image(channels, size).repeat(4, 1, 1, 1)
    assert ms_ssim_diversity(same) == pytest.approx(1.0, abs=1e-4)
    noise = ms_ssim_diversity(noise_images(5, channels, size, seed=size + channels))
    assert not math.isnan(noise)
    assert noise < 0.3


def test_ms_ssim_diversity_scores_anti_correlated_pairs_zero_where_torchmetrics_raw_gives_nan() -> None:
    image = smooth_image(1, 32)
    pair = torch.cat([image, -image])
    window, betas = _ms_ssim_settings(32, 32)
    raw = multiscale_structural_similarity_index_measure(
        pair[:1] + 1, pair[1:] + 1, sigma=_gaussian_sigma(window), kernel_size=window,
        data_range=2.0, betas=betas, normalize=None,
    )
    assert torch.isnan(raw)  # why normalize is needed at all
    assert ms_ssim_diversity(pair) == 0.0
    simple = ms_ssim_diversity(pair, normalize="simple")
    assert 0.0 <= simple < 0.5


def test_ms_ssim_diversity_samples_distinct_pairs_reproducibly() -> None:
    images = noise_images(30, 1, 16, seed=28)
    first = ms_ssim_diversity(images, max_pairs=20, seed=1)
    assert ms_ssim_diversity(images, max_pairs=20, seed=1, batch_pairs=7) == pytest.approx(first, abs=1e-7)
    assert ms_ssim_diversity(images, max_pairs=20, seed=2) != first
    i, j = _pair_indices(30, 50, np.random.default_rng(0))
    assert (i < j).all() and j.max() < 30
    assert len(set(zip(i.tolist(), j.tolist()))) == 50
    all_i, all_j = _pair_indices(5, 50, np.random.default_rng(0))
    assert len(all_i) == 10  # 5 images have 10 pairs, fewer than max_pairs: all of them


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(4, 16, 16), r"images with shape \(N, C, H, W\) and C in \(1, 3\), got \(4, 16, 16\)"),
        (torch.zeros(4, 2, 16, 16), r"got \(4, 2, 16, 16\)"),
        (torch.zeros(1, 1, 16, 16), r"at least 2 images, got \(1, 1, 16, 16\)"),
        (torch.full((3, 1, 16, 16), 1.5), r"images in \[-1.0, 1.0\] \(data_range=2.0\), got values in \[1.5, 1.5\]"),
    ],
)
def test_image_validation_names_the_argument_and_shape(images: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ms_ssim_diversity(images)


# ------------------------------------------------------------------ paired scores


@pytest.mark.parametrize("size", [8, 16])
def test_paired_metrics_of_identical_images(size: int) -> None:
    x = noise_images(3, 3, size, seed=29)
    scores = paired_metrics(x, x.clone())
    assert set(scores) == {"mse", "ssim", "psnr"}
    assert all(value.shape == (3,) for value in scores.values())
    assert torch.equal(scores["mse"], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(scores["ssim"], torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert torch.isinf(scores["psnr"]).all()


def test_paired_psnr_of_a_known_noise_level() -> None:
    real = noise_images(2, 1, 16, seed=30) * 0.5  # in [-0.5, 0.5]: adding noise never clips
    sigmas = torch.tensor([0.05, 0.2])
    signs = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2 - 1  # +-1 checkerboard
    fake = real + sigmas[:, None, None, None] * signs
    scores = paired_metrics(fake, real)
    # Float32 images: the difference equals +-sigma up to float32 rounding.
    assert torch.allclose(scores["mse"], sigmas.double() ** 2, rtol=1e-5)
    expected = 10 * torch.log10(2.0**2 / sigmas.double() ** 2)
    assert torch.allclose(scores["psnr"], expected, atol=1e-3)
    assert (scores["ssim"] < 1).all() and scores["ssim"][0] > scores["ssim"][1]


def test_paired_ssim_equals_ssim_of_the_images_mapped_to_unit_range() -> None:
    # SSIM's luminance term assumes non-negative intensities: [-1, 1] images are scored as if
    # they were in [0, 1] (the module docstring). Dark images (means near 0) would differ.
    real = noise_images(2, 1, 16, seed=31) * 0.1
    fake = noise_images(2, 1, 16, seed=32) * 0.1
    window = 11
    expected = structural_similarity_index_measure(
        (fake + 1) / 2, (real + 1) / 2, sigma=_gaussian_sigma(window), kernel_size=window,
        data_range=1.0, reduction="none",
    )
    assert torch.allclose(paired_metrics(fake, real)["ssim"], expected.double(), atol=1e-5)


def test_paired_metrics_reject_different_shapes() -> None:
    with pytest.raises(ValueError, match=r"identical shapes, got fake \(2, 1, 16, 16\) and real \(3, 1, 16, 16\)"):
        paired_metrics(torch.zeros(2, 1, 16, 16), torch.zeros(3, 1, 16, 16))


def test_the_split_interval_averages_the_splits_and_pools_their_bootstraps() -> None:
    g = torch.Generator().manual_seed(3)
    real = torch.randn(40, 6, generator=g, dtype=torch.float64)
    near = torch.randn(40, 6, generator=g, dtype=torch.float64)
    far = torch.randn(40, 6, generator=g, dtype=torch.float64) + 2.0
    groups = np.repeat(np.arange(10), 4)
    one = frechet_split_interval([SplitSets(real, near, groups)], resamples=50, seed=7)
    # one split: the plain interval
    assert one == frechet_interval(real, near, resamples=50, seed=7, real_groups=groups)
    first = frechet_interval(real, near, resamples=50, seed=7, real_groups=groups)
    second = frechet_interval(real, far, resamples=50, seed=8)
    both = frechet_split_interval([SplitSets(real, near, groups), SplitSets(real, far)], resamples=50, seed=7)
    assert both.estimate == pytest.approx((frechet_distance(real, near) + frechet_distance(real, far)) / 2)
    # the pooled resamples span both splits: from the first's low end to the second's high end
    assert first.high < second.low  # far apart
    assert both.low == pytest.approx(first.low, rel=0.5) and both.high == pytest.approx(second.high, rel=0.5)
    assert both.low < first.high and both.high > second.low
    assert (both.resamples, both.real_units, both.n_real) == (100, 10, 40)
    with pytest.raises(ValueError, match="at least one SplitSets"):
        frechet_split_interval([], resamples=5)
