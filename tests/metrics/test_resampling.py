"""Resampling by patient (synthmed.metrics.resampling) and the intervals and floors built on it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from synthmed.metrics import detectability as det
from synthmed.metrics.detectability import bootstrap_auc
from synthmed.metrics.features import FitConfig
from synthmed.metrics.fidelity import frechet_interval, real_floor_split
from synthmed.metrics.resampling import bootstrap_units, disjoint_halves, draw_units, group_folds, n_groups

PATIENTS = np.repeat([f"p{i}" for i in range(8)], 6)  # 8 patients of 6 images, 48 rows


def test_halves_hold_no_patient_twice_and_without_patients_draw_as_before():
    first, second = disjoint_halves(len(PATIENTS), 40, np.random.default_rng(3), PATIENTS)
    assert len(first) == len(second) == 24
    assert not set(PATIENTS[first]) & set(PATIENTS[second])
    # without patients: the permutation split the floors always used (same seed, same rows)
    order = np.random.default_rng(3).permutation(48)
    plain = disjoint_halves(48, 10, np.random.default_rng(3))
    assert [h.tolist() for h in plain] == [sorted(order[:10]), sorted(order[10:20])]
    # the same through the FID floor's split of a feature pool
    pool = torch.arange(48.0)[:, None]
    a, b = real_floor_split(pool, 40, seed=3, groups=PATIENTS)
    assert not set(PATIENTS[a[:, 0].long()]) & set(PATIENTS[b[:, 0].long()])


@pytest.mark.parametrize("patients", [["p0"] * 10, ["p0"] * 11 + ["p1"]])
def test_patients_that_cannot_fill_two_halves_give_image_halves_and_say_so(caplog, patients):
    # one patient; or one of 11 images and one of 1 (by patient: halves of 1 row, no covariance)
    keys = np.array(patients, dtype=object)
    first, second = disjoint_halves(len(keys), 6, np.random.default_rng(0), keys)
    assert len(first) == len(second) == min(6, len(keys) // 2) and not set(first) & set(second)
    assert "the halves share patients" in caplog.text


def test_uneven_patients_fill_the_halves_largest_first():
    keys = np.array(["a"] * 30 + ["b"] * 5 + ["c"] * 5, dtype=object)
    for seed in range(5):  # a random order alone gave halves of 5 or 10 rows, by seed
        first, second = disjoint_halves(len(keys), 40, np.random.default_rng(seed), keys)
        assert len(first) == 10 and not set(keys[first]) & set(keys[second])


def test_patients_that_fill_both_halves_land_in_either_half_by_the_draw():
    # 21 patients of 59-73 slices and halves of 64: largest first always moved only the tied patients between seeds
    keys = np.repeat([f"sub-{i:02d}" for i in range(21)], 59 + np.arange(21) * 7 % 15)
    drawn = set()
    for seed in range(5):
        first, second = disjoint_halves(len(keys), 64, np.random.default_rng(seed), keys)
        assert len(first) == len(second) == 64 and not set(keys[first]) & set(keys[second])
        drawn.add(frozenset(keys[first]))
    assert len(drawn) == 5


def test_a_bootstrap_of_one_patient_resamples_its_images_and_says_so(caplog):
    real, fake = _clustered(1, 30, 0), torch.randn(30, 4, generator=torch.Generator().manual_seed(1))
    interval = frechet_interval(real, fake, resamples=50, real_groups=["p0"] * 30,
                                fake_groups=np.arange(30))
    assert interval.real_units == 30 and interval.high > interval.low
    assert "all 30 images are of one patient" in caplog.text


def test_folds_keep_a_patient_whole_and_every_fold_gets_images(caplog):
    folds = group_folds(len(PATIENTS), 3, np.random.default_rng(1), PATIENTS)
    for patient in set(PATIENTS):
        assert len(set(folds[PATIENTS == patient])) == 1
    sizes = np.bincount(folds, minlength=3)
    assert sizes.min() > 0 and sizes.max() - sizes.min() <= 6  # balanced to within one patient
    plain = group_folds(48, 3, np.random.default_rng(1))
    assert plain.tolist() == (np.random.default_rng(1).permutation(48) % 3).tolist()
    group_folds(12, 3, np.random.default_rng(1), np.repeat(["a", "b"], 6))
    assert "2 patients for 3 folds" in caplog.text


def test_units_and_draws_match_the_image_bootstrap_without_patients():
    units = bootstrap_units(5, None)
    rows = draw_units(np.random.default_rng(7), units)
    assert rows.tolist() == np.random.default_rng(7).integers(0, 5, size=5).tolist()
    grouped = bootstrap_units(6, ["b", "a", "b", "c", "a", "b"])
    assert [u.tolist() for u in grouped] == [[1, 4], [0, 2, 5], [3]]
    # an image without a key (a class-conditional sample beside real slices) is its own unit, not a patient
    mixed = bootstrap_units(5, ["b", None, "a", "b", float("nan")])
    assert [u.tolist() for u in mixed] == [[2], [0, 3], [1], [4]]
    assert n_groups(["b", None, "a", "b", float("nan")]) == 2
    halves = disjoint_halves(6, 3, np.random.default_rng(0), ["a", "a", "a", None, None, None])
    assert sorted(np.r_[halves[0], halves[1]].tolist()) == list(range(6)) and set(halves[0]) in ({0, 1, 2}, {3, 4, 5})
    with pytest.raises(ValueError, match=r"one patient key per image \(3\), got 2"):
        bootstrap_units(3, ["a", "b"])


def _clustered(patients: int, per_patient: int, seed: int) -> torch.Tensor:
    """Features where each patient's rows sit tightly around its own centre."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(patients, 4, generator=g) * 3
    return (centres.repeat_interleave(per_patient, dim=0) + 0.05 * torch.randn(patients * per_patient, 4, generator=g))


def test_a_patient_bootstrap_of_fid_is_wider_than_an_image_bootstrap_of_clustered_rows():
    real, fake = _clustered(6, 20, 0), torch.randn(120, 4, generator=torch.Generator().manual_seed(1)) * 3
    groups = np.repeat(np.arange(6), 20)
    by_image = frechet_interval(real, fake, resamples=200, seed=0)
    by_patient = frechet_interval(real, fake, resamples=200, seed=0, real_groups=groups)
    assert by_patient.estimate == by_image.estimate
    assert by_image.real_units == 120 and by_patient.real_units == 6
    assert by_patient.high - by_patient.low > 2 * (by_image.high - by_image.low)


def test_a_patient_bootstrap_of_the_auc_is_wider_than_an_image_bootstrap_of_clustered_scores():
    rng = np.random.default_rng(0)
    negatives = np.repeat(rng.normal(0, 1, 5), 30) + rng.normal(0, 0.01, 150)  # 5 patients, 30 scores each
    positives = rng.normal(0.3, 1, 150)
    config = det.DetectabilityConfig(resamples=300)
    plain = bootstrap_auc(negatives, positives, config, np.random.default_rng(1))
    grouped = bootstrap_auc(negatives, positives, config, np.random.default_rng(1),
                            negative_groups=np.repeat(np.arange(5), 30))
    assert grouped[1] - grouped[0] > 2 * (plain[1] - plain[0])


def test_detectability_folds_the_real_images_by_patient_and_splits_its_floor_by_patient(monkeypatch):
    folds_seen, halves_seen = [], []

    def spy_folds(n, folds, rng, groups=None, **kw):
        out = group_folds(n, folds, rng, groups, **kw)
        folds_seen.append((groups, out))
        return out

    def spy_halves(n_rows, n, rng, groups=None, **kw):
        out = disjoint_halves(n_rows, n, rng, groups, **kw)
        halves_seen.append(out)
        return out

    monkeypatch.setattr(det, "group_folds", spy_folds)
    monkeypatch.setattr(det, "disjoint_halves", spy_halves)
    g = torch.Generator().manual_seed(0)
    real, synthetic = torch.rand(48, 1, 8, 8, generator=g) * 2 - 1, torch.rand(24, 1, 8, 8, generator=g) * 2 - 1
    config = det.DetectabilityConfig(width=4, feature_dim=8, resamples=50, fit=FitConfig(steps=5, batch_size=8))
    out = det.detectability_scores(real, synthetic, config, real_groups=PATIENTS)
    real_folds = [(groups, folds) for groups, folds in folds_seen if groups is not None]
    assert len(real_folds) == 3  # the real side of the test and both sides of the floor
    for groups, folds in real_folds:
        for patient in set(groups):
            assert len(set(folds[groups == patient])) == 1
    (first, second), = halves_seen
    assert not set(PATIENTS[first]) & set(PATIENTS[second])
    assert out["detectability_auc_patients"] <= 8 and out["detectability_auc_floor_patients"] <= 8


def test_the_report_names_the_patients_an_interval_drew():
    from synthmed.metrics.report import fidelity_table

    shown = fidelity_table({"fid": 4.2, "fid_low": 1.0, "fid_high": 9.0, "fid_n": 64, "fid_patients": 9,
                            "fid_floor_halves": 2.0}).set_index("metric")
    assert shown.loc["FID", "N"] == "64 (real: 9 patients)"
    assert fidelity_table({"fid": 4.2, "fid_n": 64}).set_index("metric").loc["FID", "N"] == 64
    # every interval of a row says what it drew: the floors', the real images' lesion signal
    shown = fidelity_table({"fid": 4.2, "fid_n": 64, "fid_patients": 9, "fid_floor_halves": 2.0,
                            "fid_floor_halves_n": 40, "fid_floor_halves_patients": 12,
                            "fid_floor_neighbour_slices": 0.1, "fid_floor_neighbour_slices_n": 64,
                            "fid_floor_neighbour_slices_patients": 1, "lesion_signal_auc": 0.6,
                            "lesion_signal_auc_n": 64, "lesion_signal_auc_real": 0.8,
                            "lesion_signal_auc_real_n": 1386,
                            "lesion_signal_auc_real_patients": 21}).set_index("metric")
    assert shown.loc["FID", "N"] == ("64 (real: 9 patients); halves: 40 (12 patients); "
                                     "neighbouring slices: 64 (1 patient)")
    assert shown.filter(like="lesion signal", axis=0)["N"].item() == "64; real images: 1,386 (21 patients)"
    # averaged over random splits into halves, the cell says so
    shown = fidelity_table({"fid": 4.2, "fid_n": 64, "fid_patients": 9, "fid_splits": 5, "fid_floor_halves": 2.0,
                            "fid_floor_halves_n": 64, "fid_floor_halves_patients": 21}).set_index("metric")
    assert shown.loc["FID", "N"] == ("64 (real: 9 patients); mean of 5 random splits into halves, patients the "
                                     "fewest of any split; halves: 64 (21 patients)")
    assert shown.loc["KID", "N"] == shown.loc["coverage", "N"] == "64; mean of 5 random splits into halves"
    assert fidelity_table({"fid": 4.2, "fid_n": 64, "fid_splits": 1}).set_index("metric").loc["FID", "N"] == 64
    # samples drawn from real label maps: the cell names the maps' patients too
    assert fidelity_table({"fid": 4.2, "fid_n": 64, "fid_patients": 9, "fid_synthetic_patients": 5}).set_index(
        "metric").loc["FID", "N"] == "64 (real: 9 patients; samples: the maps of 5 patients)"
    # without patients, a floor on the same N adds nothing
    assert fidelity_table({"fid": 4.2, "fid_n": 64, "fid_floor_halves": 2.0, "fid_floor_halves_n": 64,
                           "fid_floor_neighbour_slices": 0.1, "fid_floor_neighbour_slices_n": 64}
                          ).set_index("metric").loc["FID", "N"] == 64


def test_a_patient_bootstrap_of_a_mean_is_wider_and_without_patients_draws_as_before(caplog):
    from synthmed.metrics.fidelity import summarise, summarise_paired

    rng = np.random.default_rng(3)
    values = torch.as_tensor(np.repeat(rng.normal(0.8, 0.05, 6), 10) + rng.normal(0, 0.002, 60))  # 6 patients
    groups = np.repeat([f"p{i}" for i in range(6)], 10).astype(object)
    plain, grouped = summarise(values, resamples=300, seed=0), summarise(values, resamples=300, seed=0, groups=groups)
    assert grouped["mean"] == plain["mean"] and grouped["n"] == 60 and grouped["patients"] == 6
    assert "patients" not in plain
    assert grouped["high"] - grouped["low"] > 2 * (plain["high"] - plain["low"])
    # without patients: the draw of before (every value its own unit, one (resamples, n) matrix)
    array = values.numpy()
    means = array[np.random.default_rng(0).integers(0, 60, size=(300, 60))].mean(axis=1)
    assert plain["low"] == pytest.approx(np.percentile(means, 2.5))
    # one patient: its values resampled (an interval of some width), with a warning
    caplog.set_level("WARNING")
    alone = summarise(values, resamples=50, seed=0, groups=np.full(60, "p0", dtype=object))
    assert alone["high"] > alone["low"] and alone["patients"] == 1 and "one patient" in caplog.text
    paired = summarise_paired({"ssim": values}, resamples=300, seed=0, groups=groups)
    assert paired["paired_ssim_patients"] == 6 and paired["paired_ssim_low"] == grouped["low"]
    assert "paired_ssim_patients" not in summarise_paired({"ssim": values}, resamples=10)


def test_the_lesion_signal_and_contrast_intervals_draw_patients():
    from synthmed.metrics.lesion_signal import LesionSignalConfig, class_auc, paired_lesion_contrast

    rng = np.random.default_rng(0)
    config = LesionSignalConfig(resamples=300)
    scores = np.r_[np.repeat(rng.normal(0, 1, 4), 20), np.repeat(rng.normal(0.5, 1, 4), 20)]
    labels = np.r_[np.zeros(80, int), np.ones(80, int)]
    groups = np.repeat(np.arange(8), 20)
    plain = class_auc(scores, labels, 1, 0, config, np.random.default_rng(1))
    grouped = class_auc(scores, labels, 1, 0, config, np.random.default_rng(1), groups)
    assert grouped["auc"] == plain["auc"] and grouped["auc_patients"] == 8 and "auc_patients" not in plain
    assert grouped["auc_high"] - grouped["auc_low"] > 2 * (plain["auc_high"] - plain["auc_low"])
    # the contrast: only the maps with a lesion large enough count, and their patients
    maps = np.full((6, 1, 16, 16), 3, np.int64)
    maps[:4, :, 6:10, 6:10] = 4
    real = (np.where(maps == 4, 0.8, 0.0) + rng.normal(0, 0.05, maps.shape)).astype(np.float32)
    out = paired_lesion_contrast(real, real, maps, LesionSignalConfig(mask_label=4, resamples=20),
                                 groups=np.array(["a", "a", "b", "b", "c", "c"], dtype=object))
    assert out["lesion_contrast_patients"] == 2 and out["lesion_contrast_n"] == 4


def test_the_paired_and_neighbour_floor_intervals_of_the_evaluation_draw_patients():
    from synthmed.protocols.evaluation import EvaluationSet, FidelityConfig, Split, fidelity_scores

    g = torch.Generator().manual_seed(0)
    patients = np.repeat([f"sub-{i}" for i in range(8)], 12).astype(object)

    def split(n: int, keys=None) -> Split:
        return Split(torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, torch.zeros(n, dtype=torch.int64),
                     np.arange(n), torch.randn(n, 6, generator=g), keys)

    reference, synthetic = split(96, patients), split(48, patients[::2])
    # each slice's neighbour lies close to it, patients apart from each other
    first = torch.randn(5, 6, generator=g).repeat_interleave(8, dim=0) * 3 + 0.3 * torch.randn(40, 6, generator=g)
    neighbours = (first, first + 0.05 * torch.randn(40, 6, generator=g))
    evaluation = EvaluationSet(family="pix2pix", source="slices", class_names=("normal",), network=None,
                               reference=reference, held_out=reference, test=reference, synthetic=synthetic,
                               provenance=None, paired=torch.rand(48, 1, 16, 16, generator=g) * 2 - 1,
                               neighbours=neighbours, neighbour_patients=np.repeat(np.arange(5), 8))
    config = FidelityConfig(resamples=20, kid_subset_size=8, kid_subsets=3, diversity_pairs=5)
    out = fidelity_scores(evaluation, config)
    assert out["paired_ssim_patients"] == 8 and out["paired_ssim_n"] == 48
    # the pairs are drawn together: the floor's interval stays near it (apart, it would lie far above)
    assert out["fid_floor_neighbour_slices_high"] < 10 * max(out["fid_floor_neighbour_slices"], 0.05)
    assert 1 <= out["fid_floor_neighbour_slices_patients"] <= 5
    plain = fidelity_scores(replace(evaluation, synthetic=replace(synthetic, patients=None), neighbour_patients=None),
                            config)
    assert "paired_ssim_patients" not in plain and "fid_floor_neighbour_slices_patients" not in plain
    # the samples' FID draws the patients of their maps, and the metrics say how many
    assert out["fid_synthetic_patients"] == 8 and "fid_synthetic_patients" not in plain
    # the same pairs (same draw), resampled by patient: another interval; the paired SSIM's likewise
    assert out["fid_floor_neighbour_slices"] == plain["fid_floor_neighbour_slices"]
    assert out["fid_floor_neighbour_slices_low"] != plain["fid_floor_neighbour_slices_low"]
    assert out["paired_ssim"] == plain["paired_ssim"] and out["paired_ssim_low"] != plain["paired_ssim_low"]
    # FID: the samples drawn by the patients of their label maps too (the real half A's alike in both)
    assert out["fid"] == plain["fid"] and (out["fid_low"], out["fid_high"]) != (plain["fid_low"], plain["fid_high"])


def test_the_report_names_the_patients_of_the_paired_and_lesion_rows():
    from synthmed.metrics.report import fidelity_table

    shown = fidelity_table({"fid": 4.2, "fid_n": 64, "paired_ssim": 0.8, "paired_ssim_n": 64,
                            "paired_ssim_patients": 1, "lesion_contrast": 1.2, "lesion_contrast_n": 20,
                            "lesion_contrast_patients": 7}).set_index("metric")
    assert shown.filter(like="paired SSIM", axis=0)["N"].item() == "64 (real: 1 patient)"
    assert shown.filter(like="lesion contrast", axis=0)["N"].item() == "20 (real: 7 patients)"


def test_a_paired_bootstrap_draws_the_same_patients_of_both_sets():
    """A slice and its neighbour (or its inpainted copy) belong together: drawn independently, a resample
    compares one patient's slices with another's neighbours and the interval lies far above the estimate."""
    from synthmed.metrics.fidelity import bootstrap_interval, frechet_distance

    real = _clustered(8, 10, 0)
    neighbour = real + 0.05 * torch.randn(real.shape, generator=torch.Generator().manual_seed(2))
    patients = np.repeat(np.arange(8), 10)
    kwargs = {"resamples": 60, "seed": 0, "real_groups": patients}
    apart = frechet_interval(real, neighbour, fake_groups=patients, **kwargs)
    together = frechet_interval(real, neighbour, paired=True, **kwargs)
    assert together.estimate == apart.estimate
    assert apart.low > 10 * together.estimate  # independent draws: the pairs are broken
    assert together.low <= 2 * together.estimate and together.high < apart.low
    # the generic path draws the same rows
    generic = bootstrap_interval(lambda r, f: float(frechet_distance(r, f)), real, neighbour, paired=True, **kwargs)
    assert (generic.low, generic.high) == pytest.approx((together.low, together.high), rel=1e-6)
    with pytest.raises(ValueError, match="as many rows"):
        frechet_interval(real, neighbour[:-1], paired=True, resamples=2)
    with pytest.raises(ValueError, match="equal to real_groups"):
        frechet_interval(real, neighbour, paired=True, resamples=2, real_groups=patients, fake_groups=patients[::-1])

