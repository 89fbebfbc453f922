"""Utility: training sets per mode, scores against hand-computed values, intervals and deltas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthmed.metrics.features import FitConfig
from synthmed.metrics.utility import (
    MODES,
    UtilityConfig,
    balanced_accuracy,
    class_f1,
    classification_scores,
    evaluate_utility,
    training_set,
)


def test_training_set_per_mode():
    real = (torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]))
    synthetic = (torch.ones(2, 1, 8, 8), torch.tensor([1, 1]))
    sizes = {mode: (len(training_set(mode, real, synthetic)[0]), training_set(mode, real, synthetic)[2])
             for mode in MODES}
    assert sizes == {"real": (4, False), "synthetic": (2, False), "real+synthetic": (6, False),
                     "real+flips": (4, True), "real+synthetic+flips": (6, True)}
    with pytest.raises(ValueError, match="Unknown utility mode 'mixup'"):
        training_set("mixup", real, synthetic)


def test_scores_match_hand_computed_values():
    target = torch.tensor([0, 0, 0, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1])
    # recalls: class 0 2/3, class 1 1/1, class 2 0/1 -> mean 5/9
    assert balanced_accuracy(predicted, target.numpy(), 3) == pytest.approx(5 / 9)
    assert class_f1(predicted, target.numpy(), 1) == pytest.approx(2 * 1 / (3 + 1))
    probs = torch.nn.functional.one_hot(torch.as_tensor(predicted), 3).float()
    scores = classification_scores(probs, target, ["a", "b", "c"])
    assert scores["balanced_accuracy"] == pytest.approx(5 / 9)
    assert scores["precision.b"] == pytest.approx(1 / 3) and scores["recall.a"] == pytest.approx(2 / 3)
    assert scores["f1.c"] == 0.0
    # AUROC is undefined when a class is missing from the test labels
    assert np.isnan(classification_scores(probs[:3], target[:3], ["a", "b", "c"])["auroc"])


def _blobs(n: int, flip_labels: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = -0.5 + 0.1 * torch.randn(n, 1, 8, 8, generator=g)
    images[labels == 0, :, :, :4] += 1.0  # bright left half vs bright right half
    images[labels == 1, :, :, 4:] += 1.0
    return images.clamp(-1, 1), (1 - labels) if flip_labels else labels


def test_utility_reports_modes_intervals_and_paired_deltas():
    config = UtilityConfig(seeds=(0, 1), width=4, feature_dim=4, resamples=50,
                           fit=FitConfig(steps=150, batch_size=8, learning_rate=0.01))
    real, test = _blobs(16, seed=1), _blobs(20, seed=2)
    wrong = _blobs(16, flip_labels=True, seed=3)  # "synthetic" images with swapped labels
    result = evaluate_utility(real, wrong, test, ["left", "right"], config)
    summary = result.summary.set_index(["mode", "score"])
    assert set(result.runs["mode"]) == set(MODES) and set(result.runs["seed"]) == {0, 1}
    real_acc = summary.loc[("real", "balanced_accuracy")]
    assert real_acc["mean"] >= 0.9 and real_acc["low"] <= real_acc["mean"] <= real_acc["high"]
    synthetic_only = summary.loc[("synthetic", "balanced_accuracy")]
    assert synthetic_only["mean"] <= 0.2  # trained on swapped labels: wrong on real test images
    assert synthetic_only["delta_high"] < 0 and synthetic_only["delta_vs_real"] < -0.5
    assert summary.loc[("real", "balanced_accuracy"), "delta_low"] == 0.0  # paired with itself
    assert result.minority in ("left", "right")
    with pytest.raises(ValueError, match=r"unknown mode\(s\) \['cutmix'\]"):
        UtilityConfig(modes=("cutmix",))


def test_balanced_classes_let_the_real_only_classifier_find_a_rare_class():
    """A class of 3 images among 63: with uniform batches the real-only classifier never predicts
    it, so any rebalancing would look like a gain; with class-balanced batches it does."""
    images, labels = _blobs(120, seed=4)
    keep = torch.cat([torch.nonzero(labels == 0).flatten()[:60], torch.nonzero(labels == 1).flatten()[:3]])
    real = (images[keep], labels[keep])
    test = _blobs(40, seed=5)
    recall = {}
    for balanced in (False, True):
        config = UtilityConfig(modes=("real",), seeds=(0, 1), width=4, feature_dim=4, resamples=20,
                               fit=FitConfig(steps=100, batch_size=8, learning_rate=0.01), balance_classes=balanced)
        result = evaluate_utility(real, (real[0][:0], real[1][:0]), test, ["left", "right"], config)
        summary = result.summary.set_index(["mode", "score"])
        recall[balanced] = float(summary.loc[("real", "recall.right"), "mean"])
    assert recall[False] < 0.2 and recall[True] > 0.8, recall
    with pytest.raises(ValueError, match="balance_classes must be true or false"):
        UtilityConfig(balance_classes="yes")


def _summary_of(predictions: dict[str, list[np.ndarray]], target: np.ndarray, groups=None):
    """``utility._summary`` of given predictions (two classes, class 1 the minority)."""
    import pandas as pd

    from synthmed.metrics.utility import _summary

    rows = [{"mode": mode, "seed": s, "score": score, "value": 0.0}
            for mode, preds in predictions.items() for s in range(len(preds))
            for score in ("balanced_accuracy", "f1.lesion")]
    config = UtilityConfig(seeds=tuple(range(len(predictions["real"]))), resamples=400)
    summary = _summary(pd.DataFrame(rows), predictions, target, 2, 1, "lesion", config, 0, groups)
    return summary.set_index(["mode", "score"])


def test_the_interval_draws_patients_not_their_slices():
    # Two patients of 50 slices each: the classifier is right on every slice of one, wrong on every
    # slice of the other. Drawn by slice, the 100 "independent" tests pin the accuracy near 0.5;
    # drawn by patient, a test set could as well have held two patients like either.
    target = np.tile([0, 1], 50)
    right = target.copy()
    right[50:] = 1 - right[50:]
    groups = np.repeat(["p1", "p2"], 50)
    by_slice = _summary_of({"real": [right]}, target).loc[("real", "balanced_accuracy")]
    by_patient = _summary_of({"real": [right]}, target, groups).loc[("real", "balanced_accuracy")]
    assert by_slice["high"] - by_slice["low"] < 0.25
    assert by_patient["low"] <= 0.05 and by_patient["high"] >= 0.95
    assert by_patient["n_test_groups"] == 2 and by_slice["n_test_groups"] == 100


def test_the_interval_holds_the_spread_between_seeds():
    # Seed 0's classifier is right on every test image, seed 1's wrong on every one: the mean of
    # the two is 0.5 on any resample of the images, but another draw of seeds could give 0 or 1.
    target = np.tile([0, 1], 50)
    row = _summary_of({"real": [target, 1 - target]}, target).loc[("real", "f1.lesion")]
    assert row["low"] <= 0.05 and row["high"] >= 0.95


def test_test_groups_must_name_every_test_image():
    config = UtilityConfig(seeds=(0,), width=4, feature_dim=4, resamples=10, fit=FitConfig(steps=2, batch_size=4))
    with pytest.raises(ValueError, match="test_groups has 3 entries for 20 test images"):
        evaluate_utility(_blobs(8), _blobs(4), _blobs(20), ["left", "right"], config, test_groups=["a", "b", "c"])
