"""``params:preprocessing`` as dataclasses, in a module without pydicom or nibabel: the parameter
check (``synthmed.parameters``) reads them before any node runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from synthmed.core.config import from_params
from synthmed.imaging.intensity import IntensitySpec


@dataclass(frozen=True)
class GeometrySpec:
    """Per-modality geometry: isotropic target spacing (mm) and longest side (px, 2D only)."""

    target_spacing_mm: float | None = None
    resize_longest_px: int | None = None

    def __post_init__(self) -> None:
        if self.target_spacing_mm is not None and not float(self.target_spacing_mm) > 0:
            raise ValueError(f"target_spacing_mm must be positive or null, got {self.target_spacing_mm}.")
        if self.resize_longest_px is not None and int(self.resize_longest_px) < 8:
            raise ValueError(f"resize_longest_px must be at least 8 or null, got {self.resize_longest_px}.")


@dataclass(frozen=True)
class PreprocessingConfig:
    """``params:preprocessing`` (``deid``, ``split`` and ``pixels`` are read by their own nodes).

    ``deid`` is read by ingestion too: its workers de-identify DICOM files in the pass that
    decodes them (``ingestion.workers`` processes; preprocessing parses no DICOM file).
    """

    intensity: Mapping[str, Mapping[str, Any]]
    geometry: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    deid: Mapping[str, Any] = field(default_factory=dict)
    split: Mapping[str, Any] = field(default_factory=dict)
    pixels: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "default" not in self.intensity:
            raise ValueError(
                "preprocessing.intensity needs a 'default' entry (used for modalities without "
                f"their own); found {sorted(self.intensity)}."
            )

    def for_modality(self, modality: str) -> tuple[IntensitySpec, GeometrySpec]:
        """The ``default`` settings overridden by the modality's own (e.g. ``CT``)."""
        intensity = {**self.intensity["default"], **self.intensity.get(modality, {})}
        geometry = {**self.geometry.get("default", {}), **self.geometry.get(modality, {})}
        return (
            IntensitySpec.from_params(intensity),
            from_params(GeometrySpec, geometry, f"preprocessing.geometry.{modality}"),
        )
