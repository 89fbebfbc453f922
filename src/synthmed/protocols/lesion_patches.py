"""The "lesion patches" study (issue 10): DCGAN lesion and normal patches, as in the published figure.

Data: the extraction's lesion-centred and normal patches (``lesion_patches`` /
``lesion_patch_manifest``, cut inside each patient's split and normalised per patch:
``synthmed.imaging.lesion_patches``) and the demo's ``dcgan`` generator, which learns them
(``dcgan.run.source: lesion_patches``): the study shares the demo's model rather than training
its own.

Model, metrics and rows: the ``dcgan`` family, class-conditional on normal / lesion, trained
with synthmed's trainer by the training pipeline; FID (the project's Frechet distance with its real-vs-real floor on the
same N, ``synthmed.protocols.evaluation.fid_splits`` / ``fid_intervals``) in the feature space of
a domain encoder trained on the real training patches; class fidelity (``class_fidelity``: the
share of each class's synthetic patches that encoder assigns to that class, beside its share on
held-out real patches); the downstream classifier
(``synthmed.metrics.utility.evaluate_utility``) in four modes tested on held-out patients.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.core.validation import is_int, is_number
from synthmed.imaging.lesion_patches import CLASS_NAMES, LESION, NORMAL
from synthmed.protocols.studies import PublishedRow, StudyRow, check_held_out_splits, check_level, clopper_pearson

pd = lazy_import("pandas")
torch = lazy_import("torch")
logger = logging.getLogger(__name__)

WHERE = "study_lesion_patches"
# The classifier modes of the study (synthmed.metrics.utility names) and how the table names them.
UTILITY_MODES = {"real": "real", "real+flips": "real+flips", "real+synthetic": "real+GAN",
                 "real+synthetic+flips": "real+GAN+flips"}
FID_METRICS = ("fid",)
UTILITY_METRICS = ("f1_lesion", "auroc", "balanced_accuracy")
UTILITY_LABELS = {"f1_lesion": "F1 (lesion)", "auroc": "AUC", "balanced_accuracy": "balanced accuracy"}


@dataclass(frozen=True)
class StudyEvaluation:
    """``params:study_lesion_patches.evaluation``.

    Args:
        test_splits: the held-out patients' splits the classifiers are tested on (no model
            selection happens on validation, so it can join the test set).
        synthetic_per_real: synthetic patches per real training patch of each class.
        sample_seed, batch_size: the generator's latents and images per pass.
        encoder: ``synthmed.protocols.encoders.EncoderConfig`` keys (the FID feature network).
        fid_resamples, level, seed: bootstrap of the FID and its floor.
        fid_splits: random splits of the real patches into halves, averaged (``protocols.evaluation.fid_splits``).
        utility: ``synthmed.metrics.utility.UtilityConfig`` keys (modes: the study's four).
        tsne_perplexity: of the t-SNE map.
        grid_examples: patches per row of the sample grid.
    """

    test_splits: tuple[str, ...] = ("validation", "test")
    synthetic_per_real: float = 1.0
    sample_seed: int = 0
    batch_size: int = 64
    encoder: Mapping[str, Any] = field(default_factory=dict)
    fid_resamples: int = 200
    fid_splits: int = 5
    level: float = 0.95
    seed: int = 0
    utility: Mapping[str, Any] = field(default_factory=dict)
    tsne_perplexity: float = 20.0
    grid_examples: int = 8

    def __post_init__(self) -> None:
        where = f"{WHERE}.evaluation"
        check_held_out_splits(f"{where}.test_splits", self.test_splits)
        if not is_number(self.synthetic_per_real) or self.synthetic_per_real <= 0:
            raise ValueError(f"{where}.synthetic_per_real must be a number > 0, got {self.synthetic_per_real!r}.")
        for key in ("batch_size", "fid_resamples", "fid_splits", "grid_examples"):
            if not is_int(getattr(self, key)) or getattr(self, key) < 1:
                raise ValueError(f"{where}.{key} must be an integer >= 1, got {getattr(self, key)!r}.")
        check_level(f"{where}.level", self.level)


@dataclass(frozen=True)
class PublishedFigure:
    """``study_lesion_patches.published``: the figure printed beside ours (a cited constant)."""

    label: str
    fid: float
    citation: str


@dataclass(frozen=True)
class LesionPatchesConfig:
    """``params:study_lesion_patches``.

    Args:
        evaluation: ``StudyEvaluation`` keys.
        published: the published figure printed beside ours.

    The patches are ``extraction.lesion_patches``'; the model is ``dcgan``'s (parameters_training.yml).
    """

    evaluation: StudyEvaluation = field(default_factory=StudyEvaluation)
    published: PublishedFigure | None = None


# ----------------------------------------------------------------------------- rows of the tables


def fid_rows(fid: Mapping[str, float], *, model_source: str) -> list[StudyRow]:
    """Our FID row and the real-vs-real floor (``fid_intervals``' keys), same N; the mean over
    ``fid_splits`` random splits of the real patches into halves when there are several."""
    n = float(fid["fid_n"])
    splits = int(fid.get("fid_splits", 1))
    averaged = f"; the mean of {splits} random splits into halves" if splits > 1 else ""
    return [
        StudyRow("DCGAN lesion patches (ours)", "ours",
                 {"fid": {"mean": fid["fid"], "low": fid["fid_low"], "high": fid["fid_high"], "n": n}},
                 model_source + averaged),
        StudyRow("real vs real lesion patches (floor)", "floor",
                 {"fid": {"mean": fid["fid_floor_halves"], "low": fid["fid_floor_halves_low"],
                          "high": fid["fid_floor_halves_high"], "n": float(fid["fid_floor_halves_n"])}},
                 "two disjoint halves of the real training lesion patches: the FID a perfect generator reaches at "
                 f"this N{averaged}"),
    ]


def published_rows(figure: PublishedFigure | None) -> list[PublishedRow]:
    if figure is None:
        return []
    return [PublishedRow(figure.label, {"fid": figure.fid}, figure.citation)]


def utility_rows(summary: pd.DataFrame, runs: pd.DataFrame, *, n_train: Mapping[str, int]) -> list[StudyRow]:
    """One row per classifier mode: lesion F1 (seed mean, bootstrap interval over the test patients and
    seeds), AUC (seed mean, [min, max] over seeds), balanced accuracy (seed mean, bootstrap interval)."""
    rows = []
    for mode, name in UTILITY_MODES.items():
        part = summary[summary["mode"] == mode].set_index("score")
        if part.empty:
            continue
        n_test = float(part["n_test"].iloc[0])
        auroc = runs[(runs["mode"] == mode) & (runs["score"] == "auroc")]["value"]
        summaries = {
            "f1_lesion": {"mean": part.loc["f1.lesion", "mean"], "low": part.loc["f1.lesion", "low"],
                          "high": part.loc["f1.lesion", "high"], "n": n_test},
            "auroc": {"mean": float(auroc.mean()), "low": float(auroc.min()), "high": float(auroc.max()),
                      "n": n_test},
            "balanced_accuracy": {"mean": part.loc["balanced_accuracy", "mean"],
                                  "low": part.loc["balanced_accuracy", "low"],
                                  "high": part.loc["balanced_accuracy", "high"], "n": n_test},
        }
        kind = "ours" if "synthetic" in mode else "reference"
        source = f"{n_train.get(mode, 0)} training patches, {int(part['seeds'].iloc[0])} seeds"
        rows.append(StudyRow(name, kind, summaries, source))
    return rows


def class_fidelity(predicted: np.ndarray, labels: np.ndarray, level: float) -> dict[str, float]:
    """The share of the patches of each class that a classifier trained on real patches assigns to
    that class (GAN-test, Shmelkov, Schmid & Alahari 2018, https://arxiv.org/abs/1807.09499, per
    class): ``<class>`` with a Clopper-Pearson interval ``<class>_low`` / ``<class>_high`` at
    ``level`` and ``<class>_n``, for each class of ``CLASS_NAMES`` that has patches.

    On synthetic patches it says whether a class is drawn as that class (a lesion class drawn
    without lesions scores near the normal class's error rate); on held-out real patches the
    same numbers are the reference: what the classifier reaches on real images of that class.
    """
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or labels.ndim != 1:
        raise ValueError(f"class_fidelity: predictions of shape {predicted.shape} for labels of shape {labels.shape}; "
                         "expected two (N,) arrays of class ids.")
    out: dict[str, float] = {}
    for cls, name in enumerate(CLASS_NAMES):
        rows = labels == cls
        n = int(rows.sum())
        if n == 0:
            continue
        k = int((predicted[rows] == cls).sum())
        low, high = clopper_pearson(k, n, level)
        out |= {name: k / n, f"{name}_low": low, f"{name}_high": high, f"{name}_n": float(n)}
    return out


def spread(count: int, available: int) -> np.ndarray:
    """``min(count, available)`` indices spread evenly over ``range(available)``, first and last included
    (patches are stored patient after patient, so a grid row shows several patients, not one lesion's
    neighbouring slices)."""
    if available <= 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, available - 1, min(count, available)).round().astype(np.int64))


def sample_grid(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray, count: int):
    """Four rows of ``count`` patches: real lesion, synthetic lesion, real normal, synthetic normal, each
    row spread evenly over its class (``spread``)."""
    import matplotlib.pyplot as plt

    rows = [("real lesion", real, real_labels, LESION), ("synthetic lesion", fake, fake_labels, LESION),
            ("real normal", real, real_labels, NORMAL), ("synthetic normal", fake, fake_labels, NORMAL)]
    figure, axes = plt.subplots(4, count, figsize=(1.1 * count, 4.6), squeeze=False)
    for i, (title, images, labels, cls) in enumerate(rows):
        of_class = images[labels == cls]
        chosen = of_class[spread(count, len(of_class))]
        for j in range(count):
            axis = axes[i, j]
            axis.set_xticks([])
            axis.set_yticks([])
            if j < len(chosen):
                axis.imshow((np.clip(chosen[j, 0], -1.0, 1.0) + 1.0) / 2.0, cmap="gray", vmin=0.0, vmax=1.0)
            else:
                axis.axis("off")
        axes[i, 0].set_ylabel(title, fontsize=7)
    figure.tight_layout()
    return figure
