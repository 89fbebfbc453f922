"""The lesion signal (synthmed.metrics.lesion_signal): does the lesion class carry the lesion's mark?"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from synthmed.metrics.lesion_signal import (
    LesionSignalConfig,
    lesion_contrast,
    lesion_signal,
    paired_lesion_contrast,
    spot_scores,
)
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
    ("mask_label", 0, "mask_label must be"),
    ("ring_px", 0, "ring_px must be"),
    ("min_lesion_px", 1.5, "min_lesion_px must be"),
])
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ValueError, match=f"evaluation.lesion_signal.*{message}"):
        LesionSignalConfig(**{field: value})


@pytest.mark.parametrize(("name", "row"), [("lesion_signal_auc", "lesion signal"),
                                           ("lesion_contrast", "lesion contrast")])
def test_the_report_prints_the_synthetic_figure_beside_the_real_one(name, row):
    metrics = {name: 0.61, f"{name}_low": 0.5, f"{name}_high": 0.7, f"{name}_n": 64.0, f"{name}_real": 0.91,
               f"{name}_real_low": 0.85, f"{name}_real_high": 0.95}
    shown = fidelity_table(metrics).set_index("metric").filter(like=row, axis=0).iloc[0]
    assert "0.61" in shown["synthetic vs real"] and "0.91" in shown["floor: real vs real (halves)"]
    assert fidelity_table({}).metric.str.contains(row).sum() == 0


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
    assert out["lesion_signal_auc"] < 0.75 and out["lesion_signal_real_paired"] == 0.0
    # Samples drawn from real maps: the real images of those maps, each with its sample's class.
    from_maps = dataclasses.replace(evaluation, synthetic=trained_on, paired=unseen.images)
    out = protocol_signal(from_maps, CONFIG)
    assert out["lesion_signal_auc_real"] < 0.75 < out["lesion_signal_auc"]
    assert out["lesion_signal_real_paired"] == 1.0
    table = fidelity_table({**out, "n_synthetic": 50})
    assert table.metric.str.contains("real slices of the same label maps").sum() == 1


CONTRAST = LesionSignalConfig(resamples=200, mask_label=4)


def _maps(n: int, side: int = 32, lesion_px: int = 4) -> np.ndarray:
    """Label maps: tissue (3) in a disc, a ``lesion_px`` square of lesion (4) near the centre of each."""
    y, x = np.mgrid[:side, :side]
    maps = np.zeros((n, 1, side, side), dtype=np.int64)
    maps[:, 0][:, (y - side / 2) ** 2 + (x - side / 2) ** 2 < (side / 2.5) ** 2] = 3
    c = side // 2 - lesion_px // 2
    maps[:, 0, c:c + lesion_px, c:c + lesion_px] = 4
    return maps


def _drawn(maps: np.ndarray, brightness: float, seed: int) -> np.ndarray:
    """Noisy tissue on a -1 background with the lesion label ``brightness`` above it."""
    rng = np.random.default_rng(seed)
    images = np.where(maps > 0, rng.normal(0.0, 0.1, maps.shape), -1.0)
    return (images + brightness * (maps == 4)).astype(np.float32)


def test_the_lesion_contrast_is_high_where_the_lesion_is_drawn_and_zero_where_it_is_not():
    maps = _maps(6)
    bright, flat = lesion_contrast(_drawn(maps, 0.5, 0), maps, CONTRAST), lesion_contrast(_drawn(maps, 0.0, 1), maps,
                                                                                          CONTRAST)
    assert (bright > 3).all() and (np.abs(flat) < 0.5).all()
    # a lesion below min_lesion_px, or none, gives no value; a wrong-sized map is named
    tiny = _maps(2, lesion_px=1)
    assert np.isnan(lesion_contrast(_drawn(tiny, 0.5, 2), tiny, CONTRAST)).all()
    with pytest.raises(ValueError, match=r"images of \(16, 16\) pixels but label maps of \(32, 32\)"):
        lesion_contrast(np.zeros((6, 1, 16, 16)), maps, CONTRAST)


@pytest.mark.parametrize("edema_px", [2, 3])
def test_the_lesion_contrast_is_against_the_tissue_beyond_the_edema_label(edema_px):
    # A bright edema shell (label 5) around each lesion: with it labelled, the ring is the plain
    # tissue beyond it, as wide as around a lesion without edema, so the lesion stands out as much
    # as without the shell, even when the edema is as wide as the ring (3 px); the same shell left
    # in the tissue label (3) lowers the contrast, because it brightens the ring.
    maps = _maps(6)
    lesion = maps[:, 0] == 4
    shell = ndimage.binary_dilation(lesion, structure=np.ones((1, 3, 3), bool), iterations=edema_px) & ~lesion
    labelled = maps.copy()
    labelled[:, 0][shell] = 5
    images = _drawn(maps, 0.5, 0)
    images[:, 0][shell] += 0.4
    against_tissue = lesion_contrast(images, labelled, CONTRAST)
    plain = lesion_contrast(_drawn(maps, 0.5, 0), maps, CONTRAST)
    assert (np.abs(against_tissue - plain) < 0.3 * plain).all()
    assert (lesion_contrast(images, maps, CONTRAST) < against_tissue / 2).all()


def test_a_label_layout_of_its_own_gets_the_same_contrast_once_its_values_are_set():
    # The cohort's layout (tissue 3, lesion 4, edema 5) against another (tissue 1, lesion 2, edema 7):
    # the same images give the same contrasts when the config names the other layout's values.
    maps = _maps(6)
    lesion = maps[:, 0] == 4
    shell = ndimage.binary_dilation(lesion, structure=np.ones((1, 3, 3), bool), iterations=2) & ~lesion
    maps[:, 0][shell] = 5
    images = _drawn(maps, 0.5, 0)
    images[:, 0][shell] += 0.4
    other = np.select([maps == 3, maps == 4, maps == 5], [1, 2, 7], 0)
    own = dataclasses.replace(CONTRAST, mask_label=2, tissue_labels=(1,), edema_label=7)
    expected = lesion_contrast(images, maps, CONTRAST)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(lesion_contrast(images, other, own), expected)
    # left unset, the other layout's tissue (1) is not in the default tissue labels (2, 3): the run
    # stops and names the values the maps hold
    with pytest.raises(ValueError, match=r"holds a tissue label \[2, 3\].*their values are \[0, 1, 4, 7\]"):
        lesion_contrast(images, np.select([maps == 3, maps == 4, maps == 5], [1, 4, 7], 0), CONTRAST)


@pytest.mark.parametrize("fields, message", [
    ({"tissue_labels": []}, "tissue_labels must be a non-empty list"),
    ({"tissue_labels": [2, 2]}, "tissue_labels must be a non-empty list of distinct"),
    ({"tissue_labels": [2, -1]}, "tissue_labels must be a non-empty list"),
    ({"tissue_labels": [2, 4]}, r"mask_label \(4\) is also in tissue_labels \[2, 4\]"),
    ({"edema_label": 3}, r"edema_label \(3\) is also in tissue_labels"),
    ({"edema_label": 4}, "mask_label and edema_label must differ"),
    ({"edema_label": "five"}, "edema_label must be a label-map value >= 0 or null"),
])
def test_the_tissue_and_edema_labels_are_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        LesionSignalConfig(mask_label=4, **fields)
    assert LesionSignalConfig(mask_label=4, tissue_labels=[1, 2], edema_label=None).tissue_labels == (1, 2)


def test_the_paired_contrast_puts_the_samples_beside_the_real_images_of_the_same_maps():
    maps = np.concatenate([_maps(20), _maps(4, lesion_px=1)])  # the last 4: lesions too small, left out
    real = _drawn(maps, 0.5, 3)
    faint = paired_lesion_contrast(_drawn(maps, 0.1, 4), real, maps, CONTRAST)
    assert faint["lesion_contrast_n"] == faint["lesion_contrast_real_n"] == 20
    assert faint["lesion_contrast_real_low"] <= faint["lesion_contrast_real"] <= faint["lesion_contrast_real_high"]
    assert faint["lesion_contrast_high"] < faint["lesion_contrast_real_low"]  # drawn at a fifth of the real contrast
    assert faint["lesion_contrast_low"] > 0  # but drawn
    undrawn = paired_lesion_contrast(_drawn(maps, 0.0, 5), real, maps, CONTRAST)
    assert undrawn["lesion_contrast_low"] < 0 < undrawn["lesion_contrast_high"]
    assert paired_lesion_contrast(real, real, maps, CONFIG) == {}  # mask_label null: no contrast
    assert paired_lesion_contrast(real, real, np.minimum(maps, 3), CONTRAST) == {}  # no lesion in any map


def test_the_evaluation_measures_the_contrast_on_mask_samples_at_their_own_size_and_reports_it():
    import pandas as pd
    import torch

    from synthmed.protocols.evaluation import EvaluationSet, Split, label_maps_at, prepare_evaluation
    from synthmed.protocols.evaluation import lesion_signal as protocol_signal

    # prepare_evaluation keeps the samples' own 32 px (the evaluation size is 16) with each one's real image and map
    maps = _maps(8).astype(np.uint8)
    store = {"images": _drawn(maps.astype(np.int64), 0.5, 6), "masks": maps, "labels": np.array([0, 1] * 4)}
    manifest = pd.DataFrame({"index": np.arange(8), "split": ["train"] * 4 + ["validation"] * 2 + ["test"] * 2,
                             "class_id": [0, 1] * 4, "label": ["normal", "lesion"] * 4})
    samples = {"images": _drawn(maps[[5, 4]].astype(np.int64), 0.1, 7), "labels": np.ones(2, dtype=np.int64)}
    provenance = pd.DataFrame({"index": [0, 1], "condition": "mask", "source_index": [5, 4]})

    from synthmed.metrics.features import ClassifierConfig, ConvClassifier, TrainedClassifier
    from synthmed.protocols import evaluation as protocol

    encoder = TrainedClassifier(ConvClassifier(ClassifierConfig(channels=1, num_classes=2, image_px=16, width=2,
                                                                feature_dim=4)), NAMES)
    config = protocol.EvaluationConfig(sources={"slices": {"image_px": 16}}, encoder={})
    prepared = prepare_evaluation("pix2pix", samples, provenance, "slices", store, manifest, encoder, config)
    pairs = prepared.paired_maps
    assert pairs.synthetic.shape == pairs.real.shape == (2, 1, 32, 32)
    np.testing.assert_array_equal(pairs.real, store["images"][[5, 4]])
    np.testing.assert_array_equal(pairs.label_maps, label_maps_at(store, np.array([5, 4]), 32))
    out = protocol_signal(prepared, CONTRAST)
    assert out["lesion_contrast"] < out["lesion_contrast_real"] / 2 and out["lesion_contrast_n"] == 2

    # class samples have no maps: no contrast
    labels = np.zeros(2, dtype=int)
    split = Split(torch.zeros(2, 1, 8, 8), torch.from_numpy(labels), np.arange(2), torch.zeros(0, 0))
    plain = EvaluationSet(family="dcgan", source="slices", class_names=NAMES, network=None, reference=split,
                          held_out=split, test=split, synthetic=split, provenance=None, paired=None, neighbours=None)
    assert "lesion_contrast" not in protocol_signal(plain, CONTRAST)



@pytest.mark.parametrize(("source", "measured"), [("slices", True), ("lesion_patches", False)])
def test_the_evaluation_measures_the_lesion_signal_where_its_source_asks(monkeypatch, source, measured):
    """conf/base switches it off for the DCGAN's lesion patches: normalised per patch, every patch's spot
    percentile is 1, so the bright-spot score says nothing there."""
    from types import SimpleNamespace

    from synthmed.pipelines.evaluation import nodes
    from tests.conftest import load_parameters

    monkeypatch.setattr(nodes.protocol, "fidelity_scores", lambda evaluation, config: {"fid": 1.0})
    monkeypatch.setattr(nodes.protocol, "detectability", lambda evaluation, config: {})
    monkeypatch.setattr(nodes.protocol, "lesion_signal", lambda evaluation, config: {"lesion_signal_auc": 0.7})
    scores = nodes.fidelity_scores(SimpleNamespace(source=source), load_parameters("base")["evaluation"])
    assert ("lesion_signal_auc" in scores) == measured and scores["fid"] == 1.0
