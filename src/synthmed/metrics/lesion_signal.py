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
Both carry a percentile bootstrap interval (the images of each class resampled; with patient
keys, each class's patients drawn whole, as slices of one brain are not independent). Computed at
the evaluation size, without a network: cheap enough to run for every family.

The lesion contrast answers the same question for families drawn from a real label map
(``condition: mask``, Pix2Pix): is the lesion drawn where the lesion mask is? For every
sample whose map holds a lesion of at least ``min_lesion_px`` pixels,

    contrast = (mean inside the lesion - mean of the grey and white matter within ``ring_px``
                pixels of it or of its edema) / std of that surrounding tissue

(a contrast-to-noise ratio, the volume study's ``lesion_contrast_sd`` on one slice; the tissue
is ``tissue_labels``, the cohort's grey matter 2 and white matter 3 by default, and the edema
``edema_label``, the cohort's 5; a run whose label maps hold none of the tissue labels stops
with an error that names the values they hold), on the sample and on the real image of the
same map, at the samples' own size (a 3 px lesion of a 64 px slice is 1 px at 32). The two
means, each with a bootstrap interval over the same resampled maps (their patients drawn whole,
where the maps have them), are reported side by side: a synthetic mean near the real one means
the lesions stand out of the tissue around them as the real ones do; near 0, they are not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.core.validation import is_int, is_number
from synthmed.imaging.labels import EDEMA, GREY, WHITE
from synthmed.metrics.detectability import auc, bootstrap_auc
from synthmed.metrics.resampling import Groups, n_groups, subset

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
        resamples: bootstrap resamples of each AUC and contrast mean.
        level: confidence level of the intervals.
        seed: the bootstrap.
        mask_label: the label-map value of a lesion, for the lesion contrast of samples drawn from
            a label map; null: no lesion contrast.
        ring_px: width of the ring of tissue around a lesion the contrast compares with.
        min_lesion_px: lesions of fewer pixels (at the samples' size) are left out of the contrast.
        tissue_labels: the label-map values of the tissue the ring takes (the cohort's grey and
            white matter, 2 and 3).
        edema_label: the label-map value of perilesional edema, left out of the ring (the ring lies
            beyond the edema connected to the lesion); null: the maps mark none.
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
    mask_label: int | None = None
    ring_px: int = 3
    min_lesion_px: int = 3
    tissue_labels: tuple[int, ...] = (GREY, WHITE)
    edema_label: int | None = EDEMA

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
        if self.mask_label is not None and (not is_int(self.mask_label) or self.mask_label < 1):
            raise ValueError(f"{where}.mask_label must be a label-map value >= 1 or null, got {self.mask_label!r}.")
        for name in ("ring_px", "min_lesion_px"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{where}.{name} must be an integer >= 1, got {getattr(self, name)!r}.")
        if isinstance(self.tissue_labels, list):  # YAML lists
            object.__setattr__(self, "tissue_labels", tuple(self.tissue_labels))
        if (not isinstance(self.tissue_labels, tuple) or not self.tissue_labels
                or not all(is_int(v) and v >= 0 for v in self.tissue_labels)
                or len(set(self.tissue_labels)) != len(self.tissue_labels)):
            raise ValueError(f"{where}.tissue_labels must be a non-empty list of distinct label-map values >= 0, "
                             f"got {self.tissue_labels!r}.")
        if self.edema_label is not None and (not is_int(self.edema_label) or self.edema_label < 0):
            raise ValueError(f"{where}.edema_label must be a label-map value >= 0 or null, got {self.edema_label!r}.")
        named = {"mask_label": self.mask_label, "edema_label": self.edema_label}
        for name, value in named.items():
            if value is not None and value in self.tissue_labels:
                raise ValueError(f"{where}.{name} ({value}) is also in tissue_labels {list(self.tissue_labels)}: "
                                 "the lesion, its edema and the tissue around them need values of their own.")
        if self.mask_label is not None and self.mask_label == self.edema_label:
            raise ValueError(f"{where}.mask_label and edema_label must differ, both are {self.mask_label!r}.")


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
              rng: np.random.Generator, groups: Groups = None) -> dict[str, float]:
    """AUC of ``scores`` for class ``lesion`` against class ``normal``, its bootstrap interval and the
    class sizes; empty when either class has no image. With ``groups`` (a patient key per image) the
    bootstrap draws each class's patients whole and ``auc_patients`` says how many there are."""
    positive, negative = labels == lesion, labels == normal
    positives, negatives = scores[positive], scores[negative]
    if not len(positives) or not len(negatives):
        return {}
    low, high = bootstrap_auc(negatives, positives, config, rng, negative_groups=subset(groups, negative),
                              positive_groups=subset(groups, positive))
    out = {"auc": float(auc(negatives, positives)), "auc_low": float(low), "auc_high": float(high),
           "auc_n": float(len(positives) + len(negatives)), "n_lesion": float(len(positives)),
           "n_normal": float(len(negatives))}
    if groups is not None:
        out["auc_patients"] = float(n_groups(subset(groups, positive | negative)))
    return out


def lesion_signal(real: tuple[np.ndarray, np.ndarray], synthetic: tuple[np.ndarray, np.ndarray],
                  class_names: tuple[str, ...], config: LesionSignalConfig, *, real_groups: Groups = None,
                  synthetic_groups: Groups = None) -> dict[str, float]:
    """``lesion_signal_auc`` (synthetic) and ``lesion_signal_auc_real`` (the real reference), each with
    ``_low``/``_high``/``_n``; empty when disabled or when the classes are not among ``class_names``.

    Args:
        real, synthetic: ``(images (N, C, H, W) in [-1, 1], labels (N,))`` each.
        class_names: the label of each class name (its position).
        real_groups, synthetic_groups: patient keys of the images (for samples drawn from real
            label maps, those maps' patients), or None: with them each interval draws patients.
    """
    if not config.enabled or config.lesion_class not in class_names or config.normal_class not in class_names:
        return {}
    lesion, normal = class_names.index(config.lesion_class), class_names.index(config.normal_class)
    rng = np.random.default_rng(config.seed)
    out: dict[str, float] = {}
    for suffix, (images, labels), groups in (("_real", real, real_groups), ("", synthetic, synthetic_groups)):
        scores = spot_scores(np.asarray(images), config)
        for key, value in class_auc(scores, np.asarray(labels), lesion, normal, config, rng, groups).items():
            name = key.replace("auc", f"lesion_signal_auc{suffix}") if key.startswith("auc") \
                else f"lesion_signal_{key}{suffix}"
            out[name] = value
    return out


def lesion_contrast(images: np.ndarray, label_maps: np.ndarray, config: LesionSignalConfig) -> np.ndarray:
    """The lesion contrast (module docstring) of each image of ``(N, C, H, W)`` in [-1, 1] (channels
    averaged) at label ``config.mask_label`` of its map ``(N, 1, H, W)``: the study_3d's contrast-to-noise
    ratio (``synthmed.metrics.volumes.lesion_contrast_sd``) on a slice, with the intensity itself for the
    residual and a ring of ``ring_px`` pixels; NaN where the lesion has fewer than ``min_lesion_px`` pixels
    or the tissue around it does not vary."""
    from synthmed.metrics.volumes import lesion_contrast_sd  # here: torch loads with it

    grey = np.asarray(images, dtype=np.float64).mean(axis=1)
    maps = np.rint(np.asarray(label_maps)[:, 0]).astype(np.int64)
    if grey.shape != maps.shape:
        raise ValueError(f"lesion contrast: images of {grey.shape[1:]} pixels but label maps of {maps.shape[1:]}.")
    out = np.full(len(grey), np.nan)
    lesions = maps == config.mask_label
    measured = [k for k in range(len(maps)) if lesions[k].sum() >= config.min_lesion_px]
    if measured and not np.isin(maps[measured], config.tissue_labels).any():
        raise ValueError(
            f"lesion contrast: none of the {len(measured)} label maps with a lesion (label {config.mask_label}) holds "
            f"a tissue label {list(config.tissue_labels)} (evaluation.lesion_signal.tissue_labels); their values are "
            f"{np.unique(maps[measured]).tolist()}. Set tissue_labels to the values of the tissue around a lesion, "
            "or mask_label: null for no lesion contrast.")
    for k in measured:
        out[k] = lesion_contrast_sd(grey[k], maps[k], lesions[k], (1.0, 1.0), float(config.ring_px),
                                    tissue_labels=config.tissue_labels, edema_label=config.edema_label)
    return out


def paired_lesion_contrast(synthetic: np.ndarray, real: np.ndarray, label_maps: np.ndarray,
                           config: LesionSignalConfig, *, groups: Groups = None) -> dict[str, float]:
    """``lesion_contrast`` (the samples) and ``lesion_contrast_real`` (the real image of each sample's map),
    each with ``_low``/``_high``/``_n`` (``fidelity.summarise``: the same seed resamples the same maps for
    both); empty when ``mask_label`` is null, the measure is disabled or no map holds a lesion large enough.
    With ``groups`` (the patient of each map) the intervals draw patients, and ``_patients`` says how many
    of them had a lesion large enough."""
    if not config.enabled or config.mask_label is None:
        return {}
    from synthmed.metrics.fidelity import flat_summary, summarise  # here: torch loads with it

    values = {"": lesion_contrast(synthetic, label_maps, config), "_real": lesion_contrast(real, label_maps, config)}
    keep = np.isfinite(values[""]) & np.isfinite(values["_real"])
    if not keep.any():
        return {}
    out: dict[str, float] = {}
    for suffix, contrast in values.items():
        out |= flat_summary(f"lesion_contrast{suffix}",
                            summarise(torch.from_numpy(contrast[keep]), resamples=config.resamples,
                                      level=config.level, seed=config.seed, groups=subset(groups, keep)))
    return out
