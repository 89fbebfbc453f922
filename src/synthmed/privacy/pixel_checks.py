"""Pixel checks of one item (PS3.15 Clean Pixel Data and Clean Recognizable Visual Features).

Two checks, each configured in ``preprocessing.pixels``:

- **Text in pixels** (``ocr``): 2D items of the classes that often carry burned-in text are
  read by OCR (``synthmed.privacy.burned_in_text``). Candidates are DICOM items that the
  quarantine rule flags (``synthmed.privacy.dicom_deid.quarantine_reason``: a quarantined
  modality, Burned In Annotation YES) and, by default, every raster file (screenshots,
  scanned documents and photographs arrive as PNG/JPEG/TIFF). ``on_text: quarantine`` keeps
  an item with text out of every output; ``on_text: redact`` fills the boxes with the image
  minimum and releases the item only if a second OCR pass reads nothing. A DICOM copy keeps
  its original pixels, so a DICOM item with text is always quarantined; volumes are not
  read (their slices are reordered to RAS+ and text in them would be mirrored or turned).
- **Faces** (``deface``): head volumes, i.e. MR or CT (``modalities``) whose DICOM Body Part
  Examined is in ``body_parts``, or any NIfTI volume of those modalities when
  ``nifti_is_head`` (NIfTI has no body part field), get a face plane
  (``synthmed.privacy.deface``). The arrays downstream and the NIfTI copy are defaced; a
  DICOM head series is quarantined ("face not removed from DICOM copy") because defaced
  pixels are not written back into DICOM files; a plane that cannot be found quarantines
  the item. A DICOM series without Body Part Examined is not taken for a head.

The result of both is one row per item (``PIXEL_COLUMNS``): counts, box coordinates and the
plane, never the text read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.core.manifest import format_spacing
from synthmed.privacy.burned_in_text import find_text, parse_boxes, redact
from synthmed.privacy.deface import DefaceSettings, FacePlane, apply_deface, plan_deface

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
nib = lazy_import("nibabel")

logger = logging.getLogger(__name__)

PIXEL_COLUMNS = [
    "item_id", "format", "modality", "ocr_checked", "text_boxes", "redacted_boxes", "head", "face_plane",
    "face_removed_fraction", "reason",
]
OCR_CANDIDATES = ("at_risk", "raster", "image2d")
ON_TEXT = ("quarantine", "redact")
DICOM_FACE_REASON = "face not removed from DICOM copy (head MR/CT series; defaced pixels are not written to DICOM)"


@dataclass(frozen=True)
class OcrConfig:
    """``preprocessing.pixels.ocr`` (see conf/base/parameters_preprocessing.yml)."""

    enabled: bool = True
    check: tuple[str, ...] = ("at_risk", "raster")
    on_text: str = "quarantine"
    min_confidence: float = 0.5
    pad_px: int = 2

    def __post_init__(self) -> None:
        unknown = sorted(set(self.check) - set(OCR_CANDIDATES))
        if unknown:
            raise ValueError(f"preprocessing.pixels.ocr.check has unknown value(s) {unknown}; valid: "
                             f"{list(OCR_CANDIDATES)}.")
        if self.on_text not in ON_TEXT:
            raise ValueError(f"preprocessing.pixels.ocr.on_text must be one of {list(ON_TEXT)}, got {self.on_text!r}.")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"preprocessing.pixels.ocr.min_confidence must be in [0, 1], got {self.min_confidence}.")
        if self.pad_px < 0:
            raise ValueError(f"preprocessing.pixels.ocr.pad_px must be >= 0, got {self.pad_px}.")


@dataclass(frozen=True)
class DefaceConfig(DefaceSettings):
    """``preprocessing.pixels.deface``: which volumes are heads, plus the `DefaceSettings`."""

    enabled: bool = True
    modalities: tuple[str, ...] = ("MR", "CT")
    body_parts: tuple[str, ...] = ("HEAD", "BRAIN", "SKULL")
    nifti_is_head: bool = True

    def is_head(self, item_format: str, modality: str, body_part: str | None) -> bool:
        if not self.enabled or modality.upper() not in {m.upper() for m in self.modalities}:
            return False
        if item_format == "nifti":
            return self.nifti_is_head
        return (body_part or "").strip().upper() in {b.upper() for b in self.body_parts}


@dataclass(frozen=True)
class PixelChecksConfig:
    """``params:preprocessing.pixels``."""

    ocr: OcrConfig = OcrConfig()
    deface: DefaceConfig = DefaceConfig()

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> PixelChecksConfig:
        return from_params(cls, params, "preprocessing.pixels")


def _frame(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W)`` or ``(H, W, 3)`` for OCR."""
    if image.shape[0] == 1:
        return image[0]
    if image.shape[0] == 3:
        return np.moveaxis(image, 0, -1)
    return image.mean(axis=0)


def unchecked_row(item_id: str, item_format: str, modality: str, reason: str = "") -> dict[str, Any]:
    """A row (``PIXEL_COLUMNS``) of an item nothing was found in yet, or that stays out for ``reason``."""
    return {
        "item_id": item_id, "format": item_format, "modality": modality, "ocr_checked": False, "text_boxes": 0,
        "redacted_boxes": "", "head": False, "face_plane": "", "face_removed_fraction": 0.0, "reason": reason,
    }


def check_item(
    image: np.ndarray,
    *,
    item_id: str,
    item_format: str,
    modality: str,
    spacing: tuple[float, ...],
    at_risk: bool,
    body_part: str | None,
    config: PixelChecksConfig,
) -> dict[str, Any]:
    """The pixel-check row of one item (``PIXEL_COLUMNS``).

    Args:
        image: the ingested array, ``(C, H, W)`` (2D) or ``(1, X, Y, Z)`` (RAS+ volume).
        at_risk: the DICOM quarantine rule flags the item (burned-in text likely).
        body_part: DICOM Body Part Examined, or None.
    """
    row = unchecked_row(item_id, item_format, modality)
    image = np.asarray(image)
    is_2d = image.ndim == 3
    ocr = config.ocr
    wanted = (("at_risk" in ocr.check and at_risk) or ("raster" in ocr.check and item_format == "raster")
              or "image2d" in ocr.check)
    if ocr.enabled and is_2d and wanted:
        row["ocr_checked"] = True
        boxes = find_text(_frame(image), min_confidence=ocr.min_confidence)
        row["text_boxes"] = len(boxes)
        if boxes and (ocr.on_text == "quarantine" or item_format == "dicom"):
            row["reason"] = f"text found in pixels ({len(boxes)} box(es))"
        elif boxes:
            height, width = image.shape[1:]
            pad = ocr.pad_px  # stored grown, so every later fix fills exactly these pixels
            coords = [(max(b.row0 - pad, 0), min(b.row1 + pad, height), max(b.col0 - pad, 0), min(b.col1 + pad, width))
                      for b in boxes]
            clean = redact(image, coords, pad_px=0, channel_axis=0)
            left = find_text(_frame(clean), min_confidence=ocr.min_confidence)
            if left:
                row["reason"] = f"text left in pixels after redaction ({len(left)} box(es))"
            else:
                row["redacted_boxes"] = ";".join(f"{r0}:{r1},{c0}:{c1}" for r0, r1, c0, c1 in coords)
        logger.info("Text check of item %s: %d box(es)", item_id, len(boxes))
    if not is_2d and image.ndim == 4 and config.deface.is_head(item_format, modality, body_part):
        row["head"] = True
        if len(spacing) != 3 or not all(math.isfinite(float(s)) and float(s) > 0 for s in spacing):
            # A DICOM series without Pixel Spacing (or a NIfTI without zooms): no distance in mm
            # can be measured, so the face cannot be removed; the item stays out.
            row["reason"] = f"defacing failed: voxel size unknown ({format_spacing(spacing)} mm)"
            logger.info("Face check of item %s: voxel size unknown", item_id)
            return row
        plan = plan_deface(image[0], tuple(spacing), modality, config.deface)
        if plan.plane is None:
            row["reason"] = f"defacing failed: {plan.failure}"
        else:
            row["face_plane"] = plan.plane.as_text()
            row["face_removed_fraction"] = round(plan.removed_fraction, 6)
            if item_format == "dicom" and not row["reason"]:
                row["reason"] = DICOM_FACE_REASON
        logger.info("Face check of item %s: %s", item_id, plan.failure or f"{plan.removed_fraction:.1%} removed")
    return row


@dataclass(frozen=True)
class PixelFix:
    """What the pixel checks change in one released item: redacted boxes, the face plane."""

    boxes: tuple[tuple[int, int, int, int], ...] = ()
    plane: FacePlane | None = None

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The fixed copy of a channels-first item (``(C, H, W)`` or ``(C, X, Y, Z)``)."""
        if self.boxes:
            array = redact(array, list(self.boxes), pad_px=0, channel_axis=0)
        if self.plane is not None:
            array = apply_deface(array, self.plane)
        return array

    def actions(self) -> dict[str, int]:
        """Audit counts: ``text_boxes_redacted``, ``face_removed``."""
        return {"text_boxes_redacted": len(self.boxes), "face_removed": int(self.plane is not None)}

    def fix_copy(self, copy: Any) -> Any:
        """A de-identified copy with the same fix: a NIfTI image, or a raster ``(H, W[, C])`` array."""
        if isinstance(copy, nib.Nifti1Image):
            return defaced_nifti(copy, self.plane) if self.plane is not None else copy
        pixels = np.asarray(copy)
        if self.boxes:
            pixels = redact(pixels, list(self.boxes), pad_px=0, channel_axis=-1 if pixels.ndim == 3 else None)
        return pixels


def pixel_fixes(pixel_checks: pd.DataFrame) -> dict[str, PixelFix]:
    """Item id -> `PixelFix` of every released item that needs one."""
    fixes = {}
    for row in pixel_checks.itertuples():
        if str(row.reason):
            continue
        boxes = tuple(parse_boxes(row.redacted_boxes)) if str(row.redacted_boxes) else ()
        plane = FacePlane.parse(row.face_plane) if str(row.face_plane) else None
        if boxes or plane is not None:
            fixes[str(row.item_id)] = PixelFix(boxes, plane)
    return fixes


def pixel_quarantine(pixel_checks: pd.DataFrame) -> dict[str, str]:
    """Item id -> the reason the pixel checks quarantine it."""
    return {str(r.item_id): str(r.reason) for r in pixel_checks.itertuples() if str(r.reason)}


def with_fix(loader: Any, fix: PixelFix | None) -> Any:
    """``loader`` (zero-argument, returns a copy) whose result gets ``fix``; ``loader`` when None."""
    if fix is None:
        return loader
    return lambda: fix.fix_copy(loader())


def defaced_nifti(image: nib.Nifti1Image, plane: FacePlane) -> nib.Nifti1Image:
    """``image`` in closest-canonical RAS+ order (the grid the plane was planned on), defaced.

    The copy is written in that order with its matching affine: the same voxels in space,
    and no need to map the plane back to the source's axis order.
    """
    canonical = nib.as_closest_canonical(image)
    data = np.asanyarray(canonical.dataobj)
    defaced = apply_deface(data if data.ndim == 3 else np.moveaxis(data, -1, 0), plane)
    if data.ndim != 3:
        defaced = np.moveaxis(defaced, 0, -1)
    header = canonical.header.copy()
    header.set_data_dtype(defaced.dtype)
    return canonical.__class__(defaced, canonical.affine, header)
