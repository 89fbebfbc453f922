"""``params:study_3d`` and its blocks, importable without torch (the parameter check builds them
before every run; the nodes in ``nodes.py`` import the heavy libraries)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from synthmed.core.validation import is_number
from synthmed.imaging.cohort_config import LABEL_NAMES, WHITE


@dataclass(frozen=True)
class FidConfig:
    """``params:study_3d.evaluation.fid``: bootstrap of the 2.5D FID and the other intervals."""

    resamples: int = 200
    level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class VolumeGateConfig:
    """``params:study_3d.evaluation.memorisation``: the gate on volumes.

    Args:
        percentile: of the held-out volumes' nearest-neighbour NCC to the training volumes:
            the threshold (``privacy.memorisation.calibrate_threshold``).
        planted: perturbed copies of training volumes scored as a self-test.
        noise_std: Gaussian noise added to each planted copy.
        min_self_test_recall: below this share of planted copies flagged, the gate is reported blind.
    """

    percentile: float = 99.0
    planted: int = 8
    noise_std: float = 0.05
    min_self_test_recall: float = 0.9
    seed: int = 0


@dataclass(frozen=True)
class UtilityConfig3D:
    """``params:study_3d.evaluation.utility``: lesion segmenters on real vs real + synthetic volumes.

    Args:
        enabled: run it (2 x len(seeds) segmenter trainings).
        test_split: the real held-out volumes they are scored on; synthetic volumes drawn from this
            split's label maps are not trained on.
        seeds: one segmenter per mode and seed.
    """

    enabled: bool = True
    test_split: str = "validation"
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class VolumeReaderKitConfig:
    """``params:study_3d.evaluation.reader_kit``: the blinded orthogonal-view sheets for readers.

    Args:
        enabled: build the kit (an empty kit and key when false).
        real_splits: the real held-out volumes shown (those with a lesion; never the training split).
        real_crop: the real volumes' crop kind: ``brain`` (whole-brain crops, as the lesion-control
            volumes are drawn from: a ``lesion`` crop centres its lesion, which would give the real ones
            away) or ``""`` for every crop.
        synthetic_kinds: the plan rows shown: ``lesion`` (a lesion placed as asked), ``paired`` (the
            held-out map's own lesions; the same anatomy as a real volume).
        distinct_patients: leave out synthetic volumes drawn from the label map of a patient whose real
            volumes are shown (the same brain twice would give the pair away).
        per_source: volumes drawn from each source (at most the smaller source's count).
        display_px: width of each sheet (three views side by side) in pixels; nearest-neighbour upscaling.
        margin: background pixels around each view; with ``marks``, ticks at the lesion centre's row
            and column in it.
        seed: drawing and shuffling.
        title: on the sheet and in the instructions.
    """

    enabled: bool = True
    real_splits: tuple[str, ...] = ("validation", "test")
    real_crop: str = "brain"
    synthetic_kinds: tuple[str, ...] = ("lesion",)
    distinct_patients: bool = True
    per_source: int = 10
    display_px: int = 684
    margin: int = 3
    marks: bool = True
    seed: int = 0
    title: str = "synthmed 3D reader study"

    def __post_init__(self) -> None:
        name = "study_3d.evaluation.reader_kit"
        if not self.real_splits or not set(self.real_splits) <= {"train", "validation", "test"}:
            raise ValueError(f"{name}.real_splits must be a non-empty list of validation, test (or train), "
                             f"got {list(self.real_splits)}.")
        if self.real_crop not in ("", "brain", "lesion"):
            raise ValueError(f"{name}.real_crop must be brain, lesion or \"\" (every crop), got {self.real_crop!r}.")
        if not self.synthetic_kinds or not set(self.synthetic_kinds) <= {"lesion", "paired"}:
            raise ValueError(f"{name}.synthetic_kinds must be a non-empty list of lesion, paired, "
                             f"got {list(self.synthetic_kinds)}.")
        for key, low in (("per_source", 1), ("display_px", 16), ("margin", 2 if self.marks else 0)):
            value = getattr(self, key)
            if type(value) is not int or value < low:
                raise ValueError(f"{name}.{key} must be an integer >= {low}, got {value!r}.")


@dataclass(frozen=True)
class StudyEvaluationConfig:
    """``params:study_3d.evaluation``."""

    encoder: Mapping[str, Any] = field(default_factory=dict)
    segmenter: Mapping[str, Any] = field(default_factory=dict)
    control: Mapping[str, Any] = field(default_factory=dict)
    utility: Mapping[str, Any] = field(default_factory=dict)
    fid: Mapping[str, Any] = field(default_factory=dict)
    memorisation: Mapping[str, Any] = field(default_factory=dict)
    views: int = 4
    reader_kit: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyConfig:
    """``params:study_3d``.

    Args:
        family: the volume family trained (``pix2pix3d``).
        reference_split: the split trained on, FID reference and gate references.
        held_out_splits: the patients whose label maps the plan draws from (never trained on).
        run, model, training: the family's ``RunConfig``, ``Config`` and ``TrainingConfig`` keys.
        seed: sampling seed (volumes and lesion centres).
        batch_size: volumes per generator pass.
        paired: also draw one volume per held-out sub-volume from its own label map (paired scores).
        clear_label: tissue written over a held-out map's own lesions before a lesion is placed.
        plan: `LesionPlanRow` keys per row.
        min_visible_volume_ml: the smallest lesion this profile's generator draws visibly (measured:
            ``evaluation.control.visible_contrast_sd``); a plan row asking for less is kept and warned
            about (0 = no warning).
        export_dicom: DICOM series beside the NIfTI files.
        contrast: ``{brighter: <tissue>, darker: <tissue>}``: only sub-volumes whose mean intensity in
            the first tissue exceeds the second's (one MR contrast per study when the manifest does not
            record it: `synthmed.imaging.volumes.tissue_order`); empty = every sub-volume.
        evaluation: `StudyEvaluationConfig` keys.
    """

    family: str = "pix2pix3d"
    reference_split: str = "train"
    held_out_splits: tuple[str, ...] = ("validation", "test")
    run: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 4
    paired: bool = True
    clear_label: int = WHITE
    plan: tuple[Mapping[str, Any], ...] = ()
    min_visible_volume_ml: float = 0.0
    export_dicom: bool = True
    contrast: Mapping[str, str] = field(default_factory=dict)
    evaluation: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_number(self.min_visible_volume_ml) or self.min_visible_volume_ml < 0:
            raise ValueError(f"study_3d.min_visible_volume_ml must be a number >= 0, got "
                             f"{self.min_visible_volume_ml!r}.")
        if self.contrast and (set(self.contrast) != {"brighter", "darker"}
                              or not set(self.contrast.values()) <= set(LABEL_NAMES.values())):
            raise ValueError(f"study_3d.contrast must be empty or {{brighter: <tissue>, darker: <tissue>}} with tissue "
                             f"names {sorted(LABEL_NAMES.values())}, got {dict(self.contrast)}.")
