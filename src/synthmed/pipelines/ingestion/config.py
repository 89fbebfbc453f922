"""``params:ingestion`` as a dataclass, in a module without pydicom or highdicom: the parameter
check (``synthmed.parameters``) reads it before any node runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from synthmed.imaging.formats import FORMATS


@dataclass(frozen=True)
class IngestionConfig:
    """``params:ingestion``. See conf/base/parameters_ingestion.yml for each key."""

    formats: tuple[str, ...] = FORMATS
    ignore: tuple[str, ...] = ()
    labels_csv: str | None = None
    labels_from_subfolders: bool = False
    default_label: str = "unlabelled"
    default_modality: Mapping[str, str] = field(default_factory=lambda: {"raster": "OT", "nifti": "MR"})
    mask_suffix: str = "_mask"
    patient_from: str = "stem"
    max_pixels: int = 400_000_000
    max_file_mb: float = 2048.0
    strict: bool = False
    max_rejection_rate: float = 0.2
    workers: int | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"ingestion.formats has unknown format(s) {unknown}; valid: {list(FORMATS)}.")
        if self.patient_from not in ("stem", "parent"):
            raise ValueError(f"ingestion.patient_from must be 'stem' or 'parent', got {self.patient_from!r}.")
        if not 0.0 <= self.max_rejection_rate <= 1.0:
            raise ValueError(
                f"ingestion.max_rejection_rate must be in [0, 1], got {self.max_rejection_rate}."
            )
        if not self.mask_suffix:
            raise ValueError("ingestion.mask_suffix must not be empty.")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise ValueError(
                f"ingestion.workers must be a positive number of processes or null (all available cores), "
                f"got {self.workers!r}."
            )
        if self.max_pixels <= 0 or self.max_file_mb <= 0:
            raise ValueError(
                f"ingestion.max_pixels and max_file_mb must be positive, got {self.max_pixels} and {self.max_file_mb}."
            )
