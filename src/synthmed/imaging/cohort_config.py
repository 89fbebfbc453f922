"""The sample cohort's labels and configuration (``params:sample_cohort``), without its libraries.

The parameter check reads these dataclasses; ``synthmed.imaging.cohort`` builds the cohort with
them (TorchIO, nilearn, pydicom, highdicom load there, on use). Kept apart so that checking the
parameters, or any ``kedro run``, does not import pydicom's code dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from synthmed.imaging.labels import BACKGROUND, CSF, EDEMA, GREY, LABEL_NAMES, LESION, WHITE  # noqa: F401 (re-exported)
from synthmed.imaging.lesions import LesionConfig

CONTRASTS = ("T1w", "FLAIR")
BadFile = Literal["truncated_dicom", "dicom_wrong_geometry", "nifti_mask_mismatch"]


@dataclass(frozen=True)
class ContrastIntensity:
    """Lesion intensities of one contrast, relative to white matter = 1 of that contrast."""

    core: float
    rim: float
    edema: float


@dataclass(frozen=True)
class AugmentationConfig:
    """``params:sample_cohort.augmentation`` (TorchIO transforms and their ranges)."""

    scale: float                 # affine: scale drawn in [1 - scale, 1 + scale]
    degrees: float               # affine: rotation about each axis, +-degrees
    translation_mm: float        # affine: +-mm
    elastic_control_points: int  # B-spline grid per axis
    elastic_max_mm: float        # largest elastic displacement
    bias_coefficients: float     # RandomBiasField coefficients range +-
    log_gamma: float             # RandomGamma: log of gamma in +-log_gamma
    noise_std: float             # RandomNoise: std up to this (white matter = 1)
    artefact_fraction: float     # share of subjects with motion or ghosting (half each)

    def __post_init__(self) -> None:
        if not 0 <= self.scale < 0.5 or self.elastic_control_points < 5 or self.elastic_max_mm < 0:
            raise ValueError("sample_cohort.augmentation: need 0 <= scale < 0.5, elastic_control_points >= 5 "
                             f"and elastic_max_mm >= 0; got {self.scale}, {self.elastic_control_points}, "
                             f"{self.elastic_max_mm}.")
        if not 0 <= self.artefact_fraction <= 1:
            raise ValueError(f"sample_cohort.augmentation.artefact_fraction must be in [0, 1], "
                             f"got {self.artefact_fraction}.")


@dataclass(frozen=True)
class CohortConfig:
    """``params:sample_cohort`` (read by ``sample_cohort.nodes.build_sample_cohort``)."""

    seed: int
    n_subjects: int
    spacing_mm: float
    dicom_fraction: float
    lesions: LesionConfig
    augmentation: AugmentationConfig
    flair_tissue: dict[str, float]   # FLAIR means of csf / grey_matter / white_matter (white = 1)
    lesion_intensity: dict[str, ContrastIntensity]  # per contrast (T1w, FLAIR)
    bad_files: tuple[BadFile, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.n_subjects < 1:
            raise ValueError(f"sample_cohort.n_subjects must be >= 1, got {self.n_subjects}.")
        if not 1.0 <= self.spacing_mm <= 4.0:
            raise ValueError(f"sample_cohort.spacing_mm must be in [1, 4] mm, got {self.spacing_mm}.")
        if not 0.0 <= self.dicom_fraction <= 1.0:
            raise ValueError(f"sample_cohort.dicom_fraction must be in [0, 1], got {self.dicom_fraction}.")
        if set(self.lesion_intensity) != set(CONTRASTS):
            raise ValueError(f"sample_cohort.lesion_intensity needs exactly the contrasts {list(CONTRASTS)}, "
                             f"got {sorted(self.lesion_intensity)}.")
        if set(self.flair_tissue) != {"csf", "grey_matter", "white_matter"}:
            raise ValueError("sample_cohort.flair_tissue needs csf, grey_matter and white_matter, "
                             f"got {sorted(self.flair_tissue)}.")
        if "dicom_wrong_geometry" in self.bad_files or "truncated_dicom" in self.bad_files:
            if round(self.dicom_fraction * self.n_subjects) < 1:
                raise ValueError("sample_cohort.bad_files lists DICOM bad files, which are cut from a DICOM "
                                 "subject, but dicom_fraction * n_subjects rounds to 0; raise dicom_fraction.")
