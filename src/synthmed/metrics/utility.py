"""Utility: does synthetic data help a downstream classifier? (Train on X, test on real.)

Each *mode* trains the same ``ConvClassifier`` on a different training set and is scored on
the real test split only:

- ``real``: the real training split;
- ``synthetic``: the synthetic images only (train-on-synthetic, test-on-real);
- ``real+synthetic``: both;
- ``real+flips``: the real split with random flips (the cheap augmentation to beat);
- ``real+synthetic+flips``: both, with flips.

Every mode runs for several seeds. Scores (torchmetrics): balanced accuracy, macro AUROC
(one-vs-rest), and per-class precision, recall and F1. Intervals are a percentile bootstrap of
the seed-averaged score that resamples both sources of its uncertainty: the test patients (all
of a drawn patient's images together, where the test images' patients are given; else the
images) and the seeds (each mode's classifiers drawn with replacement). The patients drawn are
the same for every mode, so the difference to ``real`` gets its own paired interval. Slices of
one patient are not independent tests, and one seed's classifier can land far from another's:
an interval over images alone, with the seeds fixed, was several times too narrow on the
sample cohort (4 test patients, lesion F1 seed spread 0.16).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.core.progress import ProgressLog
from synthmed.core.validation import is_int
from synthmed.metrics.features import ClassifierConfig, FitConfig, balanced_accuracy, fit_classifier, predict_proba
from synthmed.metrics.resampling import bootstrap_units, draw_units

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
torch = lazy_import("torch")

logger = logging.getLogger(__name__)

MODES = ("real", "synthetic", "real+synthetic", "real+flips", "real+synthetic+flips")


@dataclass(frozen=True)
class UtilityConfig:
    """``params:evaluation.utility``.

    Attributes:
        modes: which of ``MODES`` to run (``real`` is always run: it is the reference).
        seeds: one classifier per mode and seed.
        width, feature_dim: the classifier's size (``ClassifierConfig``).
        fit: ``FitConfig`` fields (steps, batch_size, learning_rate, weight_decay, device).
        resamples: bootstrap resamples of the test images.
        level: confidence level of the intervals.
        balance_classes: every classifier (every mode alike) sees each class equally often in
            its batches (``fit_classifier(class_balanced=True)``). Without it a rare class can be
            left unpredicted by the real-only classifier (lesion F1 0 on the sample cohort), and
            adding synthetic minority images then measures the rebalancing, not the images.
    """

    modes: tuple[str, ...] = MODES
    seeds: tuple[int, ...] = (0, 1, 2)
    width: int = 16
    feature_dim: int = 32
    fit: FitConfig = FitConfig(steps=150)
    resamples: int = 1000
    level: float = 0.95
    balance_classes: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.modes) - set(MODES))
        if unknown:
            raise ValueError(f"evaluation.utility.modes: unknown mode(s) {unknown}; valid: {list(MODES)}.")
        if not self.seeds or not all(is_int(s) for s in self.seeds):
            raise ValueError(f"evaluation.utility.seeds must be a non-empty list of integers, got {self.seeds!r}.")
        if not is_int(self.resamples) or self.resamples < 10:
            raise ValueError(f"evaluation.utility.resamples must be an integer >= 10, got {self.resamples!r}.")
        if not 0.5 < float(self.level) < 1.0:
            raise ValueError(f"evaluation.utility.level must be in (0.5, 1), got {self.level!r}.")
        if not isinstance(self.balance_classes, bool):
            raise ValueError(f"evaluation.utility.balance_classes must be true or false, got {self.balance_classes!r}.")

    @property
    def run_modes(self) -> tuple[str, ...]:
        return tuple(m for m in MODES if m == "real" or m in self.modes)


def training_set(mode: str, real: tuple[torch.Tensor, torch.Tensor],
                 synthetic: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(images, labels, flips)`` for ``mode``."""
    if mode not in MODES:
        raise ValueError(f"Unknown utility mode {mode!r}; valid: {list(MODES)}.")
    parts = []
    if mode.startswith("real"):
        parts.append(real)
    if "synthetic" in mode:
        parts.append(synthetic)
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([torch.as_tensor(p[1], dtype=torch.int64) for p in parts])
    return images, labels, mode.endswith("flips")


def class_f1(predicted: np.ndarray, target: np.ndarray, cls: int) -> float:
    """F1 of class ``cls`` (0 when it is neither predicted nor present: nothing was found)."""
    tp = np.sum((predicted == cls) & (target == cls))
    denominator = np.sum(predicted == cls) + np.sum(target == cls)
    return float(2 * tp / denominator) if denominator else 0.0


def classification_scores(probs: torch.Tensor, target: torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """Balanced accuracy, macro AUROC and per-class precision/recall/F1 (torchmetrics).

    AUROC is NaN when a class is missing from ``target`` (it is undefined there).
    """
    # Imported here: the parameter check imports this module (UtilityConfig) before every run.
    from torchmetrics.functional.classification import (
        multiclass_auroc,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    k = len(class_names)
    target = torch.as_tensor(target, dtype=torch.int64)
    scores = {"balanced_accuracy": balanced_accuracy(probs.argmax(1).numpy(), target.numpy(), k)}
    present = torch.bincount(target, minlength=k) > 0
    scores["auroc"] = float(multiclass_auroc(probs, target, num_classes=k, average="macro")) if present.all() \
        else float("nan")
    per_class = {
        "precision": multiclass_precision(probs, target, num_classes=k, average=None, zero_division=0),
        "recall": multiclass_recall(probs, target, num_classes=k, average=None, zero_division=0),
        "f1": multiclass_f1_score(probs, target, num_classes=k, average=None, zero_division=0),
    }
    for metric, values in per_class.items():
        for name, value in zip(class_names, values.tolist()):
            scores[f"{metric}.{name}"] = float(value)
    return scores


@dataclass(frozen=True)
class UtilityResult:
    """``runs``: one row per (mode, seed, score); ``summary``: one row per (mode, score) with
    the seed-averaged value, its interval, and the paired difference to ``real``."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    minority: str


def evaluate_utility(
    real: tuple[torch.Tensor, torch.Tensor],
    synthetic: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    class_names: Sequence[str],
    config: UtilityConfig,
    *,
    seed: int = 0,
    test_groups: Sequence[object] | np.ndarray | None = None,
) -> UtilityResult:
    """Train every mode x seed, score on ``test``, bootstrap intervals.

    Args:
        real, synthetic, test: ``(images (N, C, S, S) float in [-1, 1], labels (N,) int)``.
        class_names: names of the class ids.
        seed: seeds the bootstrap.
        test_groups: ``(N_test,)`` the patient of each test image: the bootstrap draws patients.
            None: it draws images (only right where every image is its own patient).

    Returns:
        ``UtilityResult``; the minority class is the rarest class of the real training split.
    """
    k = len(class_names)
    images, labels = real
    if len(test[0]) == 0:
        raise ValueError("utility: the real test split is empty; it is what every mode is scored on.")
    if test_groups is not None and len(test_groups) != len(test[0]):
        raise ValueError(f"utility: test_groups has {len(test_groups)} entries for {len(test[0])} test images; "
                         "expected one patient key per test image.")
    minority = int(np.argmin(np.bincount(np.asarray(labels), minlength=k)))
    spec = ClassifierConfig(channels=int(images.shape[1]), num_classes=k, image_px=int(images.shape[-1]),
                            width=config.width, feature_dim=config.feature_dim)
    target = torch.as_tensor(test[1], dtype=torch.int64)
    predictions: dict[str, list[np.ndarray]] = {}
    rows = []
    modes = [mode for mode in config.run_modes if "synthetic" not in mode or len(synthetic[0]) > 0]
    log = ProgressLog(logger, "utility classifiers", len(modes) * len(config.seeds), "classifiers")
    for mode in config.run_modes:
        if mode not in modes:
            logger.warning("utility: no synthetic images, mode %s skipped", mode)
            continue
        x, y, flips = training_set(mode, real, synthetic)
        predictions[mode] = []
        for s in config.seeds:
            model = fit_classifier(x, y, spec, config.fit, seed=int(s), flips=flips,
                                   class_balanced=config.balance_classes, description=f"utility {mode} seed {s}")
            probs = predict_proba(model, test[0], device=config.fit.device)
            predictions[mode].append(probs.argmax(1).numpy())
            for score, value in classification_scores(probs, target, class_names).items():
                rows.append({"mode": mode, "seed": int(s), "score": score, "value": value})
            log.update(sum(len(p) for p in predictions.values()))
    runs = pd.DataFrame(rows, columns=["mode", "seed", "score", "value"])
    summary = _summary(runs, predictions, target.numpy(), k, minority, class_names[minority], config, seed,
                       test_groups)
    return UtilityResult(runs, summary, class_names[minority])


def _summary(runs: pd.DataFrame, predictions: dict[str, list[np.ndarray]], target: np.ndarray, k: int,
             minority: int, minority_name: str, config: UtilityConfig, seed: int,
             groups: Sequence[object] | np.ndarray | None) -> pd.DataFrame:
    """Seed means of every score; bootstrap intervals (patients and seeds) for balanced accuracy and minority F1."""
    rng = np.random.default_rng(seed)
    n = len(target)
    units = bootstrap_units(n, groups, what="utility: test images")
    draws = [draw_units(rng, units) for _ in range(config.resamples)]
    seed_draws = {mode: rng.integers(0, len(preds), size=(config.resamples, len(preds)))
                  for mode, preds in predictions.items()}
    alpha = (1.0 - float(config.level)) / 2.0
    bootstrapped = {
        "balanced_accuracy": lambda p, t: balanced_accuracy(p, t, k),
        f"f1.{minority_name}": lambda p, t: class_f1(p, t, minority),
    }
    samples: dict[tuple[str, str], np.ndarray] = {}
    for mode, preds in predictions.items():
        for score, fn in bootstrapped.items():
            samples[mode, score] = np.array([np.nanmean([fn(preds[s][d], target[d]) for s in chosen])
                                             for d, chosen in zip(draws, seed_draws[mode])])
    rows = []
    for (mode, score), group in runs.groupby(["mode", "score"], sort=False):
        row = {"mode": mode, "score": score, "mean": float(group["value"].mean()),
               "std": float(group["value"].std(ddof=0)),
               "seeds": len(group), "n_test": n, "n_test_groups": len(units), "low": np.nan, "high": np.nan,
               "delta_vs_real": np.nan, "delta_low": np.nan, "delta_high": np.nan}
        if (mode, score) in samples:
            boot = samples[mode, score]
            row["low"], row["high"] = (float(v) for v in np.nanquantile(boot, [alpha, 1 - alpha]))
            reference = runs[(runs["mode"] == "real") & (runs["score"] == score)]["value"].mean()
            delta = boot - samples["real", score]
            row["delta_vs_real"] = row["mean"] - float(reference)
            row["delta_low"], row["delta_high"] = (float(v) for v in np.nanquantile(delta, [alpha, 1 - alpha]))
        rows.append(row)
    return pd.DataFrame(rows)
