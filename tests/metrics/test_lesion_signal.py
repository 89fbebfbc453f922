"""The lesion signal (synthmed.metrics.lesion_signal): does the lesion class carry the lesion's mark?"""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.metrics.lesion_signal import LesionSignalConfig, lesion_signal, spot_scores
from synthmed.metrics.report import fidelity_table

CONFIG = LesionSignalConfig(resamples=200)
NAMES = ("normal", "lesion")


def _brains(n: int, seed: int, spot: float = 0.0, side: int = 32) -> np.ndarray:
    """Discs of noisy tissue on a -1 background; ``spot`` > 0 paints a 3x3 blob that much brighter
    (< 0: darker) at a random place inside each disc."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side]
    disc = (y - side / 2) ** 2 + (x - side / 2) ** 2 < (side / 2.5) ** 2
    images = np.full((n, 1, side, side), -1.0)
    for image in images:
        image[0][disc] = rng.normal(0.2, 0.1, disc.sum())
        if spot:
            r, c = rng.integers(side // 2 - 6, side // 2 + 4, size=2)
            image[0, r:r + 3, c:c + 3] += spot
    return np.clip(images, -1, 1).astype(np.float32)


def test_a_bright_spot_raises_the_score_and_a_dark_one_only_the_dark_score():
    plain, bright, dark = _brains(8, 0), _brains(8, 0, spot=0.6), _brains(8, 0, spot=-0.6)
    assert (spot_scores(bright, CONFIG) > spot_scores(plain, CONFIG) + 1.0).all()
    dark_config = LesionSignalConfig(polarity="dark")
    assert (spot_scores(dark, dark_config) > spot_scores(plain, dark_config) + 1.0).all()
    assert (spot_scores(dark, CONFIG) < spot_scores(plain, CONFIG) + 0.2).all()
    # an empty image has no foreground: 0, not NaN
    assert spot_scores(np.full((1, 1, 32, 32), -1.0), CONFIG).tolist() == [0.0]


def test_the_signal_is_high_where_the_lesion_class_has_spots_and_chance_where_it_does_not():
    labels = np.r_[np.zeros(30), np.ones(20)].astype(int)
    real = (np.concatenate([_brains(30, 1), _brains(20, 2, spot=0.6)]), labels)
    blind = (np.concatenate([_brains(30, 3), _brains(20, 4)]), labels)  # a class condition that changes nothing
    out = lesion_signal(real, blind, NAMES, CONFIG)
    assert out["lesion_signal_auc_real"] > 0.95
    assert out["lesion_signal_auc_real_low"] <= out["lesion_signal_auc_real"] <= out["lesion_signal_auc_real_high"]
    assert 0.25 < out["lesion_signal_auc"] < 0.75
    assert out["lesion_signal_auc_low"] < 0.5 < out["lesion_signal_auc_high"]
    assert out["lesion_signal_auc_n"] == 50 and out["lesion_signal_n_lesion"] == 20
    faithful = lesion_signal(real, real, NAMES, CONFIG)
    assert faithful["lesion_signal_auc"] == pytest.approx(out["lesion_signal_auc_real"])
    # the class names are looked up, not assumed: swapped names turn the AUC around
    swapped = lesion_signal(real, real, ("lesion", "normal"), CONFIG)
    assert swapped["lesion_signal_auc"] == pytest.approx(1 - faithful["lesion_signal_auc"])


def test_no_numbers_when_disabled_or_the_classes_are_not_the_sources():
    data = (_brains(4, 0), np.array([0, 0, 1, 1]))
    assert lesion_signal(data, data, ("axial", "coronal"), CONFIG) == {}
    assert lesion_signal(data, data, NAMES, LesionSignalConfig(enabled=False)) == {}
    only_normal = (data[0], np.zeros(4, dtype=int))
    assert "lesion_signal_auc" not in lesion_signal(data, only_normal, NAMES, CONFIG)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("polarity", "brighter", "polarity must be one of"),
    ("percentile", 40, "percentile must be in"),
    ("foreground", 1.5, "foreground must be in"),
    ("lesion_class", "normal", "must differ"),
    ("resamples", 2, "resamples must be"),
])
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ValueError, match=f"evaluation.lesion_signal.*{message}"):
        LesionSignalConfig(**{field: value})


def test_the_report_prints_the_signal_beside_the_real_splits():
    metrics = {"lesion_signal_auc": 0.61, "lesion_signal_auc_low": 0.5, "lesion_signal_auc_high": 0.7,
               "lesion_signal_auc_n": 64.0, "lesion_signal_auc_real": 0.91, "lesion_signal_auc_real_low": 0.85,
               "lesion_signal_auc_real_high": 0.95}
    row = fidelity_table(metrics).set_index("metric").filter(like="lesion signal", axis=0).iloc[0]
    assert "0.61" in row["synthetic vs real"] and "0.91" in row["floor: real vs real (halves)"]
    assert fidelity_table({}).metric.str.contains("lesion signal").sum() == 0


def test_the_evaluation_compares_the_samples_with_the_split_the_family_learnt_from():
    import torch

    from synthmed.protocols.evaluation import EvaluationSet, Split
    from synthmed.protocols.evaluation import lesion_signal as protocol_signal

    labels = np.r_[np.zeros(30), np.ones(20)].astype(int)

    def split(images: np.ndarray) -> Split:
        return Split(torch.from_numpy(images), torch.from_numpy(labels), np.arange(len(labels)), torch.zeros(0, 0))

    trained_on = split(np.concatenate([_brains(30, 1), _brains(20, 2, spot=0.6)]))  # lesions bright
    unseen = split(np.concatenate([_brains(30, 3), _brains(20, 4)]))  # no lesion visible
    evaluation = EvaluationSet(family="dcgan", source="slices", class_names=NAMES, network=None,
                               reference=trained_on, held_out=unseen, test=unseen, synthetic=unseen,
                               provenance=None, paired=None, neighbours=None)
    out = protocol_signal(evaluation, CONFIG)
    assert out["lesion_signal_auc_real"] > 0.95  # the reference (train) split, not the held-out one
    assert out["lesion_signal_auc"] < 0.75
