"""``params:ingestion`` as a dataclass, in a module without pydicom or highdicom: the parameter
check (``synthmed.parameters``) reads it before any node runs."""

from __future__ import annotations

import re
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
    # Series (contrast) name -> words that name it; the first name with a word in the text wins.
    series: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, words in self.series.items():
            if not name or not words or any(not _WORD.fullmatch(w) for w in words):
                raise ValueError(
                    f"ingestion.series.{name or '<empty>'} must be a non-empty list of words (letters and digits "
                    f"only, matched case-insensitively against the words of a series description or file name), "
                    f"got {list(words)!r}.")
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

    def series_of(self, *texts: str) -> str:
        """The series name whose words occur in ``texts``, or "" when none does.

        ``texts`` are a DICOM series' Series Description and Protocol Name, or a file's name:
        they are split into words (runs of letters and digits, case-insensitive), and the
        first entry of ``series`` (in configuration order) with one of its words among them
        names the series. "AX T2 FLAIR" is FLAIR when FLAIR comes before T2w.
        """
        words = {w.lower() for text in texts for w in _WORD.findall(text or "")}
        for name, wanted in self.series.items():
            if any(w.lower() in words for w in wanted):
                return name
        return ""


_WORD = re.compile(r"[A-Za-z0-9]+")
