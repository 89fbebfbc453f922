"""protocols.evaluation.fidelity_scores: the synthetic scores and their floors at the same N."""

from __future__ import annotations

import numpy as np
import torch

from synthmed.protocols.evaluation import EvaluationSet, FidelityConfig, Split, fidelity_scores


def _split(n: int, generator: torch.Generator) -> Split:
    images = torch.rand(n, 1, 32, 32, generator=generator) * 2 - 1
    features = torch.randn(n, 8, generator=generator, dtype=torch.float64).float()
    return Split(images, torch.zeros(n, dtype=torch.int64), np.arange(n), features)


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
