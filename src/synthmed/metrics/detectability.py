"""Detectability: can a classifier tell the synthetic images from the real ones?

A classifier two-sample test (Lopez-Paz and Oquab 2017, "Revisiting classifier two-sample
tests"): the same ``ConvClassifier`` as the utility study learns *real* (0) against
*synthetic* (1) on balanced sets, in ``folds`` folds, and every image is scored by the
classifier that did not see it. The area under the ROC curve of those out-of-fold scores is
the detectability AUC: 0.5 when the classifier cannot tell them apart, 1.0 when it always
can. Its interval is a percentile bootstrap over the images (real and synthetic resampled
separately, the classifiers fixed).

The floor is the same test between two disjoint sets of real images of the same split and the
same size: what the classifier reaches by chance (over-fitting a few images) at that N. A
detectability far above its floor means the synthetic images carry a tell (texture, blur,
intensity range), whatever their FID says.

With the real images' patient keys (``real_groups``), every step keeps a patient whole
(``synthmed.metrics.resampling``): the folds put all of a patient's images in one fold, so no
image is scored by a classifier that learnt its neighbouring slices; the floor's two real sets
hold different patients; and the bootstrap draws real patients, not slices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.core.validation import is_int, is_number
from synthmed.metrics.features import ClassifierConfig, FitConfig, fit_classifier, predict_proba
from synthmed.metrics.resampling import (
    Groups,
    bootstrap_units,
    disjoint_halves,
    draw_units,
    group_folds,
    n_groups,
    subset,
)

torch = lazy_import("torch")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectabilityConfig:
    """``params:evaluation.detectability``.

    Attributes:
        enabled: false skips the test (no detectability numbers).
        folds: cross-validation folds (>= 2); each image is scored by the classifier of the
            other folds.
        max_images: at most this many images per side (a seeded draw), so the cost stays
            bounded on large splits.
        width, feature_dim: the classifier's size (``ClassifierConfig``).
        fit: ``FitConfig`` fields (steps, batch_size, learning_rate, weight_decay, device).
        resamples: bootstrap resamples of the AUC.
        level: confidence level of the intervals.
        seed: the draw, the folds, the classifiers and the bootstrap.
    """

    enabled: bool = True
    folds: int = 2
    max_images: int = 500
    width: int = 16
    feature_dim: int = 32
    fit: FitConfig = FitConfig(steps=150)
    resamples: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"evaluation.detectability.enabled must be true or false, got {self.enabled!r}.")
        if not is_int(self.folds) or self.folds < 2:
            raise ValueError(f"evaluation.detectability.folds must be an integer >= 2, got {self.folds!r}.")
        if not is_int(self.max_images) or self.max_images < 2 * self.folds:
            raise ValueError(f"evaluation.detectability.max_images must be an integer >= 2 x folds "
                             f"({2 * self.folds}, two images per fold), got {self.max_images!r}.")
        if not is_int(self.resamples) or self.resamples < 10:
            raise ValueError(f"evaluation.detectability.resamples must be an integer >= 10, got {self.resamples!r}.")
        if not is_number(self.level) or not 0.5 < float(self.level) < 1.0:
            raise ValueError(f"evaluation.detectability.level must be in (0.5, 1), got {self.level!r}.")
        if not is_int(self.seed):
            raise ValueError(f"evaluation.detectability.seed must be an integer, got {self.seed!r}.")


def auc(negatives: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of scores ``positives`` against ``negatives`` (ties count one half).

    Both are ``(..., n)`` arrays with the same leading shape (one AUC per leading index):
    the Mann-Whitney U statistic over ``n_neg x n_pos``, from mid-ranks.
    """
    from scipy.stats import rankdata

    n_neg, n_pos = negatives.shape[-1], positives.shape[-1]
    ranks = rankdata(np.concatenate([negatives, positives], axis=-1), axis=-1)
    return (ranks[..., n_neg:].sum(axis=-1) - n_pos * (n_pos + 1) / 2) / (n_neg * n_pos)


def _out_of_fold_scores(first: torch.Tensor, second: torch.Tensor, config: DetectabilityConfig,
                        rng: np.random.Generator, description: str,
                        groups: tuple[Groups, Groups] = (None, None)) -> tuple[np.ndarray, np.ndarray]:
    """P(second) for every image of ``first`` and ``second`` (equal sizes), each from the
    classifier trained on the other folds; a side with patient keys is folded by patient."""
    n = len(first)
    spec = ClassifierConfig(channels=int(first.shape[1]), num_classes=2, image_px=int(first.shape[-1]),
                            width=config.width, feature_dim=config.feature_dim)
    # Each side cut into folds alone.
    fold_of = [group_folds(n, config.folds, rng, g, what=f"{description}: folds") for g in groups]
    scores = [np.empty(n), np.empty(n)]
    for fold in range(config.folds):
        train = [np.flatnonzero(f != fold) for f in fold_of]
        test = [np.flatnonzero(f == fold) for f in fold_of]
        x = torch.cat([first[torch.as_tensor(train[0])], second[torch.as_tensor(train[1])]])
        y = torch.cat([torch.zeros(len(train[0]), dtype=torch.int64), torch.ones(len(train[1]), dtype=torch.int64)])
        model = fit_classifier(x, y, spec, config.fit, seed=config.seed + fold,
                               description=f"{description} fold {fold + 1} of {config.folds}")
        for side, images in enumerate((first, second)):
            held = torch.as_tensor(test[side])
            scores[side][test[side]] = predict_proba(model, images[held], device=config.fit.device)[:, 1].numpy()
    return scores[0], scores[1]


def bootstrap_auc(negatives: np.ndarray, positives: np.ndarray, config: DetectabilityConfig | Any,
                  rng: np.random.Generator, *, negative_groups: Groups = None,
                  positive_groups: Groups = None) -> tuple[float, float]:
    """Percentile interval of ``auc`` over ``config.resamples`` draws (each side resampled apart) at
    ``config.level`` (any config with those two fields); a side with patient keys is resampled by
    patient (a cluster bootstrap)."""
    if negative_groups is None and positive_groups is None:
        picks_neg = rng.integers(0, len(negatives), size=(config.resamples, len(negatives)))
        picks_pos = rng.integers(0, len(positives), size=(config.resamples, len(positives)))
        values = auc(negatives[picks_neg], positives[picks_pos])
    else:  # resamples of different sizes: one AUC each
        units = (bootstrap_units(len(negatives), negative_groups, what="AUC bootstrap: negatives"),
                 bootstrap_units(len(positives), positive_groups, what="AUC bootstrap: positives"))
        values = np.empty(config.resamples)
        for i in range(config.resamples):
            neg, pos = (draw_units(rng, u) for u in units)
            values[i] = auc(negatives[neg], positives[pos])
    tail = (1.0 - float(config.level)) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def detectability_scores(real: torch.Tensor, synthetic: torch.Tensor, config: DetectabilityConfig, *,
                         what: str = "synthetic", real_groups: Groups = None) -> dict[str, float]:
    """The detectability AUC of ``synthetic`` against ``real``, with its interval and floor.

    Args:
        real: ``(N, C, S, S)`` real images in [-1, 1] (the split the generator learnt from).
        synthetic: ``(M, C, S, S)`` synthetic images, same geometry.
        what: names the synthetic set in the log.
        real_groups: ``(N,)`` patient keys of ``real``, or None: with them the folds, the
            floor's two sets and the bootstrap keep each patient whole (module docstring).

    Returns:
        ``detectability_auc`` with ``_low``, ``_high``, ``_n`` (images per side) and
        ``detectability_auc_floor`` with the same companions (two disjoint real sets); the
        floor is absent when there are fewer than ``2 x folds`` real images per half. With
        ``real_groups``, ``_patients`` beside each: the real patients drawn.
        Empty when ``config.enabled`` is false.

    Raises:
        ValueError: fewer than ``2 x folds`` images on a side (each fold needs an image of
            each side to train and to score), or real and synthetic of different geometry.
    """
    if not config.enabled:
        return {}
    if tuple(real.shape[1:]) != tuple(synthetic.shape[1:]):
        raise ValueError(f"detectability: real images are {tuple(real.shape[1:])}, synthetic "
                         f"{tuple(synthetic.shape[1:])}; expected the same (C, S, S).")
    n = min(len(real), len(synthetic), config.max_images)
    if n < 2 * config.folds:
        raise ValueError(f"detectability: {len(real)} real and {len(synthetic)} {what} images; expected at least "
                         f"{2 * config.folds} of each for {config.folds} folds (evaluation.detectability.folds).")
    rng = np.random.default_rng(config.seed)
    real_pick = np.sort(rng.choice(len(real), size=n, replace=False))
    fake_pick = np.sort(rng.choice(len(synthetic), size=n, replace=False))
    picked_groups = subset(real_groups, real_pick)
    real_scores, fake_scores = _out_of_fold_scores(real[torch.as_tensor(real_pick)],
                                                   synthetic[torch.as_tensor(fake_pick)], config, rng,
                                                   f"detectability: real vs {what}", (picked_groups, None))
    value = float(auc(real_scores, fake_scores))
    low, high = bootstrap_auc(real_scores, fake_scores, config, rng, negative_groups=picked_groups)
    out = {"detectability_auc": value, "detectability_auc_low": low, "detectability_auc_high": high,
           "detectability_auc_n": float(n)}
    if real_groups is not None:
        out["detectability_auc_patients"] = float(n_groups(picked_groups))
    # The floor: two disjoint real sets of the same size (n when the split holds 2n, else halves),
    # of different patients when there are keys.
    first, second = disjoint_halves(len(real), n, rng, real_groups, what=f"detectability floor of {what}")
    half = len(first)
    if half >= 2 * config.folds:
        groups = (subset(real_groups, first), subset(real_groups, second))
        a, b = _out_of_fold_scores(real[torch.as_tensor(first)], real[torch.as_tensor(second)], config, rng,
                                   "detectability floor: real vs real", groups)
        low, high = bootstrap_auc(a, b, config, rng, negative_groups=groups[0], positive_groups=groups[1])
        out |= {"detectability_auc_floor": float(auc(a, b)), "detectability_auc_floor_low": low,
                "detectability_auc_floor_high": high, "detectability_auc_floor_n": float(half)}
        if real_groups is not None:
            out["detectability_auc_floor_patients"] = float(n_groups(groups[0]) + n_groups(groups[1]))
    logger.info("detectability of %s: AUC %.3f [%.3f, %.3f] (n=%d per side)%s", what, value,
                out["detectability_auc_low"], out["detectability_auc_high"], n,
                f"; floor (real vs real, n={half}) {out['detectability_auc_floor']:.3f}"
                if "detectability_auc_floor" in out else "")
    return out
