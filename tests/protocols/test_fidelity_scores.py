"""protocols.evaluation.fidelity_scores: the synthetic scores and their floors at the same N."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from synthmed.protocols.evaluation import EvaluationSet, FidelityConfig, Split, fidelity_scores


def _split(n: int, generator: torch.Generator) -> Split:
    images = torch.rand(n, 1, 32, 32, generator=generator) * 2 - 1
    features = torch.randn(n, 8, generator=generator, dtype=torch.float64).float()
    return Split(images, torch.zeros(n, dtype=torch.int64), np.arange(n), features)


def _twenty_patients(seed: int) -> EvaluationSet:
    """600 reference slices of 20 patients, each patient's features around its own centre (as the
    slices of one brain are), and 64 synthetic rows."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, 8, generator=g) * 2
    patients = np.repeat([f"sub-{i:02d}" for i in range(20)], 30).astype(object)
    reference = replace(_split(600, g), features=centres.repeat_interleave(30, dim=0)
                        + 0.1 * torch.randn(600, 8, generator=g), patients=patients)
    synthetic = replace(_split(64, g), features=torch.randn(64, 8, generator=g) * 2)
    return EvaluationSet(family="ddpm", source="slices", class_names=("normal",), network=None,
                         reference=reference, held_out=reference, test=reference, synthetic=synthetic,
                         provenance=None, paired=None, neighbours=None)


def test_a_perfect_generator_reaches_the_prdc_floor():
    # Synthetic features drawn from the reference's own distribution: a perfect generator. Its
    # coverage and recall must read like the real-vs-real floor, not like a poor generator's
    # (against all 600 reference images, 64 samples covered about a fifth of them).
    g = torch.Generator().manual_seed(0)
    reference, synthetic = _split(600, g), _split(64, g)
    evaluation = EvaluationSet(family="ddpm", source="slices", class_names=("normal",), network=None,
                               reference=reference, held_out=reference, test=reference, synthetic=synthetic,
                               provenance=None, paired=None, neighbours=None)
    out = fidelity_scores(evaluation, FidelityConfig(resamples=20, kid_subset_size=16, kid_subsets=5,
                                                     diversity_pairs=10))
    for name in ("coverage", "recall", "precision"):
        assert abs(out[name] - out[f"{name}_floor_halves"]) < 0.15, (name, out[name], out[f"{name}_floor_halves"])
    assert out["coverage"] > 0.8


def test_the_floor_halves_hold_different_patients_and_the_bootstrap_draws_patients():
    # 600 reference slices of 20 patients: each patient's features sit around its own centre, as
    # the slices of one brain do. Halves sharing patients would compare a patient with itself.
    evaluation = _twenty_patients(1)
    reference = evaluation.reference
    config = FidelityConfig(resamples=50, kid_subset_size=16, kid_subsets=5, diversity_pairs=10)
    out = fidelity_scores(evaluation, config)
    # patients, not 64 slices, drawn: half A's for the FID, A's and B's (none in both) for the floor
    assert out["fid_patients"] < out["fid_floor_halves_patients"] <= 20
    without = fidelity_scores(replace(evaluation, reference=replace(reference, patients=None)), config)
    assert "fid_patients" not in without
    # sharing patients, the halves look alike: the floor reads far lower than between patients
    assert out["fid_floor_halves"] > 2 * without["fid_floor_halves"]


def test_fid_kid_and_prdc_are_the_mean_over_the_random_splits_into_halves():
    # 20 patients around their own centres: one split into halves moves the floor a lot, so the
    # scores are averaged over several draws of the halves (fid_splits, split i seeded seed + i).
    import pytest

    from synthmed.metrics import fidelity
    from synthmed.protocols.evaluation import fid_splits

    evaluation = _twenty_patients(2)
    reference, synthetic, patients = evaluation.reference, evaluation.synthetic, evaluation.reference.patients
    config = FidelityConfig(resamples=20, kid_subset_size=16, kid_subsets=5, diversity_pairs=10, splits=3)
    out = fidelity_scores(evaluation, config)
    splits = fid_splits(reference.features, synthetic.features, seed=0, splits=3, groups=patients)
    floors = [fidelity.frechet_distance(s.half_a, s.half_b) for s in splits]
    assert len(set(floors)) == 3 and out["fid_splits"] == 3
    assert out["fid_floor_halves"] == pytest.approx(np.mean(floors))
    assert out["fid"] == pytest.approx(np.mean([fidelity.frechet_distance(s.half_a, s.synthetic) for s in splits]))
    kid = [fidelity.kernel_distance(s.half_a, s.synthetic, subset_size=16, subsets=5, seed=0) for s in splits]
    assert out["kid"] == pytest.approx(np.mean([k[0] for k in kid]))
    # the std of all the splits' subsets together: within-split variance plus the spread of the means
    assert out["kid_std"] == pytest.approx(np.sqrt(np.mean([k[1] ** 2 for k in kid]) + np.var([k[0] for k in kid])))
    # the interval pools the splits' bootstraps
    pooled = fidelity.frechet_split_interval([fidelity.SplitSets(s.half_a, s.half_b, s.groups_a, s.groups_b)
                                              for s in splits], resamples=20, seed=0)
    assert (out["fid_floor_halves_low"], out["fid_floor_halves_high"]) == pytest.approx((pooled.low, pooled.high))
    coverage = [fidelity.precision_recall_density_coverage(s.half_a, s.half_b, k=5)["coverage"] for s in splits]
    assert out["coverage_floor_halves"] == pytest.approx(np.mean(coverage))
    # one split is the first of them
    single = fidelity_scores(evaluation, replace(config, splits=1))
    assert single["fid_floor_halves"] == pytest.approx(floors[0]) and single["fid_splits"] == 1
    with pytest.raises(ValueError, match="fidelity.splits must be an integer >= 1"):
        FidelityConfig(splits=0)
