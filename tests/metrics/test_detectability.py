"""Detectability: the classifier two-sample test (synthmed.metrics.detectability)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from synthmed.metrics.detectability import DetectabilityConfig, auc, detectability_scores
from synthmed.metrics.features import FitConfig

FAST = DetectabilityConfig(width=4, feature_dim=8, resamples=200, fit=FitConfig(steps=120, batch_size=16,
                                                                                 learning_rate=0.005))


def _smooth(n: int, seed: int, side: int = 16) -> torch.Tensor:
    """Smooth random images in [-1, 1]: 4x4 noise upsampled."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 4, 4, generator=g) * 1.2 - 0.6
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


def test_auc_is_the_mann_whitney_statistic_with_ties_counting_half():
    rng = np.random.default_rng(0)
    neg, pos = rng.integers(0, 5, size=40).astype(float), rng.integers(1, 6, size=30).astype(float)  # many ties
    scores = torch.as_tensor(np.concatenate([neg, pos]))
    target = torch.as_tensor(np.r_[np.zeros(40), np.ones(30)]).long()
    assert float(auc(neg, pos)) == pytest.approx(float(binary_auroc(scores, target)), abs=1e-6)  # torchmetrics: float32
    assert float(auc(np.array([0.0, 1.0]), np.array([2.0, 3.0]))) == 1.0
    assert float(auc(np.array([1.0, 1.0]), np.array([1.0]))) == 0.5
    # one AUC per row of a batch
    assert auc(np.stack([neg, pos[:1].repeat(40)]), np.stack([pos, pos])).shape == (2,)


def test_a_synthetic_set_with_a_tell_is_detected_and_the_floor_is_near_chance():
    real = _smooth(96, seed=1)
    tell = torch.zeros(1, 1, 16, 16)
    tell[..., ::2, ::2] = 0.5  # a fine grid pattern a generator might leave
    synthetic = (_smooth(48, seed=2) + tell).clamp(-1, 1)
    out = detectability_scores(real, synthetic, FAST)
    assert out["detectability_auc"] > 0.9 and out["detectability_auc_low"] > 0.75
    assert out["detectability_auc_n"] == 48 and out["detectability_auc_floor_n"] == 48
    assert out["detectability_auc_floor"] < 0.75
    assert out["detectability_auc_low"] <= out["detectability_auc"] <= out["detectability_auc_high"]
    assert detectability_scores(real, synthetic, FAST) == out  # seeded: same numbers


def test_a_synthetic_set_from_the_real_distribution_is_not_detected():
    out = detectability_scores(_smooth(64, seed=3), _smooth(64, seed=4), FAST)
    assert out["detectability_auc_low"] < 0.5 + 0.1 and abs(out["detectability_auc"] - 0.5) < 0.2
    assert "detectability_auc_floor" not in out or out["detectability_auc_floor_n"] == 32


def test_disabled_gives_nothing_and_bad_input_is_named():
    from dataclasses import replace

    assert detectability_scores(_smooth(8, 0), _smooth(8, 1), replace(FAST, enabled=False)) == {}
    with pytest.raises(ValueError, match=r"3 real and 8 synthetic images; expected at least 4 of each for 2 folds"):
        detectability_scores(_smooth(3, 0), _smooth(8, 1), FAST)
    with pytest.raises(ValueError, match=r"real images are \(1, 16, 16\), synthetic \(1, 8, 8\)"):
        detectability_scores(_smooth(8, 0), _smooth(8, 1, side=8), FAST)
    with pytest.raises(ValueError, match="folds must be an integer >= 2, got 1"):
        DetectabilityConfig(folds=1)
    with pytest.raises(ValueError, match=r"max_images must be an integer >= 2 x folds \(10, two images per fold\), "
                                         r"got 8"):
        DetectabilityConfig(folds=5, max_images=8)
    with pytest.raises(ValueError, match=r"level must be in \(0.5, 1\), got 1.5"):
        DetectabilityConfig(level=1.5)


def test_the_evaluation_skips_a_family_with_too_few_samples_with_a_warning(caplog):
    from types import SimpleNamespace

    from synthmed.protocols.evaluation import detectability

    few = SimpleNamespace(family="ddpm", reference=SimpleNamespace(images=_smooth(8, 0)),
                          synthetic=SimpleNamespace(images=_smooth(3, 1)))
    with caplog.at_level("WARNING"):
        assert detectability(few, FAST) == {}
    assert "ddpm: detectability not measured: 8 reference and 3 synthetic images, 4 of each needed" in caplog.text
