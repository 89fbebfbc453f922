"""Lesion signal: do a family's images of the lesion class carry the lesion's intensity mark?

FID, detectability and the gate look at all images together; none says whether the images
a model draws for the *lesion* class (or for a lesion mask) hold a lesion. On FLAIR and T2
slices lesions are the brightest tissue (on T1 the darkest), so a simple score of each image
separates real lesion slices from real normal ones:

    spot score = (the ``percentile``-th percentile of the foreground - its median) / its std

(``polarity: dark`` takes ``median - (100 - percentile)``-th percentile instead; foreground:
pixels above ``foreground`` in [-1, 1], where the background is -1). The lesion signal is the
area under the ROC curve of that score, lesion-class images against normal-class images:

- on the real slices the family learnt from (the evaluation's reference split): what a
  generator that drew its training slices exactly would reach, and whether the score means
  anything for this data (near 0.5: it does not, and the synthetic figure is not to be read).
  How well the score separates real lesion slices depends on the patients: on the 30-subject
  sample cohort's FLAIR slices at 32 px it is 0.66 on the training split, 0.91 on the
  validation split and 0.56 on the test split (2 and 2 lesion patients): their lesions differ
  in size and place;
- on the family's samples, by the class each was drawn for (or the label of the slice whose
  mask conditioned it).

A synthetic AUC near the real one: the lesion class is drawn with lesions as bright (or
dark) as the real ones are. Near 0.5: the class condition changes nothing the score sees.
Both carry a percentile bootstrap interval (the images of each class resampled). Computed at
the evaluation size, without a network: cheap enough to run for every family.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.core.validation import is_int, is_number
from synthmed.metrics.detectability import auc, bootstrap_auc

torch = lazy_import("torch")

POLARITIES = ("bright", "dark")
MIN_FOREGROUND = 20  # pixels: an image with fewer scores 0 (nothing to find a spot in)


@dataclass(frozen=True)
class LesionSignalConfig:
    """``params:evaluation.lesion_signal``.

    Attributes:
        enabled: false skips the measure (no lesion-signal numbers).
        lesion_class, normal_class: the class names compared (the manifest's class names).
        polarity: ``bright`` (FLAIR, T2: lesions brighter than tissue) or ``dark`` (T1).
        percentile: the spot's percentile of the foreground, in (50, 100).
        foreground: pixels above this value (images in [-1, 1]) are the foreground.
        resamples: bootstrap resamples of each AUC.
        level: confidence level of the intervals.
        seed: the bootstrap.
    """

    enabled: bool = True
    lesion_class: str = "lesion"
    normal_class: str = "normal"
    polarity: str = "bright"
    percentile: float = 99.5
    foreground: float = -0.9
    resamples: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        where = "evaluation.lesion_signal"
        if not isinstance(self.enabled, bool):
            raise ValueError(f"{where}.enabled must be true or false, got {self.enabled!r}.")
        for name in ("lesion_class", "normal_class"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{where}.{name} must be a class name, got {getattr(self, name)!r}.")
        if self.lesion_class == self.normal_class:
            raise ValueError(f"{where}.lesion_class and normal_class must differ, both are {self.lesion_class!r}.")
        if self.polarity not in POLARITIES:
            raise ValueError(f"{where}.polarity must be one of {list(POLARITIES)}, got {self.polarity!r}.")
        if not is_number(self.percentile) or not 50.0 < float(self.percentile) < 100.0:
            raise ValueError(f"{where}.percentile must be in (50, 100), got {self.percentile!r}.")
        if not is_number(self.foreground) or not -1.0 <= float(self.foreground) < 1.0:
            raise ValueError(f"{where}.foreground must be in [-1, 1), got {self.foreground!r}.")
        if not is_int(self.resamples) or self.resamples < 10:
            raise ValueError(f"{where}.resamples must be an integer >= 10, got {self.resamples!r}.")
        if not is_number(self.level) or not 0.5 < float(self.level) < 1.0:
            raise ValueError(f"{where}.level must be in (0.5, 1), got {self.level!r}.")
        if not is_int(self.seed):
            raise ValueError(f"{where}.seed must be an integer, got {self.seed!r}.")


def spot_scores(images: np.ndarray, config: LesionSignalConfig) -> np.ndarray:
    """The spot score of each image of ``(N, C, H, W)`` in [-1, 1] (channels averaged); 0 where the
    foreground has fewer than ``MIN_FOREGROUND`` pixels."""
    grey = np.asarray(images, dtype=np.float64).mean(axis=1).reshape(len(images), -1)
    scores = np.zeros(len(grey))
    for k, image in enumerate(grey):
        foreground = image[image > config.foreground]
        if foreground.size < MIN_FOREGROUND:
            continue
        median, spread = np.median(foreground), foreground.std() + 1e-6
        if config.polarity == "bright":
            scores[k] = (np.percentile(foreground, config.percentile) - median) / spread
        else:
            scores[k] = (median - np.percentile(foreground, 100.0 - config.percentile)) / spread
    return scores


def class_auc(scores: np.ndarray, labels: np.ndarray, lesion: int, normal: int, config: LesionSignalConfig,
              rng: np.random.Generator) -> dict[str, float]:
    """AUC of ``scores`` for class ``lesion`` against class ``normal``, its bootstrap interval and the
    class sizes; empty when either class has no image."""
    positives, negatives = scores[labels == lesion], scores[labels == normal]
    if not len(positives) or not len(negatives):
        return {}
    low, high = bootstrap_auc(negatives, positives, config, rng)
    return {"auc": float(auc(negatives, positives)), "auc_low": float(low), "auc_high": float(high),
            "auc_n": float(len(positives) + len(negatives)), "n_lesion": float(len(positives)),
            "n_normal": float(len(negatives))}


def lesion_signal(real: tuple[np.ndarray, np.ndarray], synthetic: tuple[np.ndarray, np.ndarray],
                  class_names: tuple[str, ...], config: LesionSignalConfig) -> dict[str, float]:
    """``lesion_signal_auc`` (synthetic) and ``lesion_signal_auc_real`` (the real reference), each with
    ``_low``/``_high``/``_n``; empty when disabled or when the classes are not among ``class_names``.

    Args:
        real, synthetic: ``(images (N, C, H, W) in [-1, 1], labels (N,))`` each.
        class_names: the label of each class name (its position).
    """
    if not config.enabled or config.lesion_class not in class_names or config.normal_class not in class_names:
        return {}
    lesion, normal = class_names.index(config.lesion_class), class_names.index(config.normal_class)
    rng = np.random.default_rng(config.seed)
    out: dict[str, float] = {}
    for suffix, (images, labels) in (("_real", real), ("", synthetic)):
        scores = spot_scores(np.asarray(images), config)
        for key, value in class_auc(scores, np.asarray(labels), lesion, normal, config, rng).items():
            name = key.replace("auc", f"lesion_signal_auc{suffix}") if key.startswith("auc") \
                else f"lesion_signal_{key}{suffix}"
            out[name] = value
    return out
