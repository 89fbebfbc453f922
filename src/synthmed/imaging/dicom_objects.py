"""What a DICOM object is, which copies are the same instance, and where each frame lies.

Pure functions over a parsed ``pydicom.Dataset`` or over small per-file records, so that
ingestion can call them from any loop (sequential or a process pool) and privacy can call
them from its quarantine decision:

- ``classify``: image, non-image object (structured report, RT plan, DICOMDIR, ...) or
  segmentation (DICOM SEG, read as a mask of the series it references), from the SOP
  Class UID (PS3.4 Annex B; names from pydicom's UID dictionary);
- ``burned_in_risks``: why an image may carry burned-in text (its class, Image Type,
  overlay planes), for ``synthmed.privacy.dicom_deid.quarantine_reason``;
- ``deduplicate``: one file per instance (same SOP Instance UID or same bytes);
- ``frame_geometry``: per-frame position, orientation and pixel spacing of an enhanced
  multi-frame image from its functional groups (PS3.3 C.7.6.16).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom._uid_dict import UID_dictionary

# Reasons of files that are ignored (not rejected) by the DICOM reader: they are not
# images to learn from, or another file already holds the same instance. Ingestion counts
# them as ignored, outside the rejection rate.
NON_IMAGE = "non_image"
DUPLICATE_OF = "duplicate_of"
IGNORED_REASONS = frozenset({NON_IMAGE, DUPLICATE_OF})

IMAGE, NON_IMAGE_KIND, SEGMENTATION = "image", "non_image", "segmentation"

# Storage classes that hold pixel data although "Image" is not in their name.
_PIXEL_CLASSES_WITHOUT_IMAGE_IN_NAME = frozenset({
    "EnhancedUSVolumeStorage", "ParametricMapStorage", "OphthalmicThicknessMapStorage",
    "CornealTopographyMapStorage", "OphthalmicOpticalCoherenceTomographyBscanVolumeAnalysisStorage",
})
# DICOM SEG objects hold label maps in Pixel Data: read as masks of their source series.
_SEGMENTATION_CLASSES = frozenset({"SegmentationStorage", "LabelMapSegmentationStorage",
                                   "HeightmapSegmentationStorage"})
# Pixel classes counted as non-image on purpose. RT Dose has Pixel Data, but it is a dose
# grid computed by a planning system (values in Gy, frames placed by GridFrameOffsetVector),
# not a picture of the patient: it must not be mixed into image training data. (Its name
# has no "Image", so the name rule agrees; the entry records the decision.)
_NON_IMAGE_PIXEL_CLASSES = frozenset({"RTDoseStorage"})

# Image classes that often carry burned-in text (PS3.15 E.3.1 Clean Pixel Data Option):
# screen captures and scanned documents (every Secondary Capture class), ultrasound
# (patient name and date on the screen), and visible-light photographs, video, endoscopy
# and microscopy (slide labels, captions). Matched on the class keyword.
_TEXT_RISK_KEYWORD_PARTS = ("SecondaryCapture", "Ultrasound", "EnhancedUSVolume", "VL", "Video",
                            "Photograph", "Endoscop", "Microscop")
# Pseudo-classes of `burned_in_risks` that are not SOP classes; allow them by these names.
DERIVED = "DERIVED"
OVERLAY = "OVERLAY"


@dataclass(frozen=True)
class DicomClass:
    """The SOP class of an object: its UID, name, keyword and kind (image, non_image, segmentation)."""

    uid: str
    name: str
    keyword: str
    kind: str


def _sop_class_uid(ds: pydicom.Dataset) -> str:
    """SOP Class UID of the dataset, else the Media Storage SOP Class UID of its file meta (DICOMDIR)."""
    uid = str(ds.get("SOPClassUID", "") or "").strip()
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = str(meta.get("MediaStorageSOPClassUID", "") or "").strip() if meta is not None else ""
    return uid


def _is_pixel_class(name: str, keyword: str) -> bool:
    return "Image" in name or keyword in _PIXEL_CLASSES_WITHOUT_IMAGE_IN_NAME


def classify(ds: pydicom.Dataset) -> DicomClass:
    """The kind of object ``ds`` is, from its SOP Class UID.

    ``non_image``: a storage class known to pydicom's UID dictionary that holds no picture
    of the patient (structured reports, key object selection, presentation states, RT
    structure sets, plans, ion plans, treatment records and RT Dose, encapsulated PDF/CDA,
    raw data, waveforms, spectroscopy, the Media Storage Directory (DICOMDIR), ...).
    ``segmentation``: DICOM SEG. ``image``: an image class, or an unknown or missing class
    (then Pixel Data decides: a file without it is rejected as ``empty`` by the decoder).
    """
    uid = _sop_class_uid(ds)
    entry = UID_dictionary.get(uid)
    if entry is None or entry[1] != "SOP Class":
        return DicomClass(uid, "unknown SOP class" if uid else "no SOP Class UID", "", IMAGE)
    name, keyword = entry[0], entry[4]
    if keyword in _SEGMENTATION_CLASSES:
        kind = SEGMENTATION
    elif keyword in _NON_IMAGE_PIXEL_CLASSES or not _is_pixel_class(name, keyword):
        kind = NON_IMAGE_KIND
    else:
        kind = IMAGE
    return DicomClass(uid, name, keyword, kind)


def ignored_reason(dicom_class: DicomClass) -> tuple[str, str] | None:
    """``(reason, detail)`` when an object of this class is ignored rather than read, else None.

    DICOM SEG is not ignored: ingestion reads it as the mask of the series it references.
    """
    if dicom_class.kind == NON_IMAGE_KIND:
        return NON_IMAGE, dicom_class.name
    return None


def segmentation_source_series(ds: pydicom.Dataset) -> str | None:
    """SeriesInstanceUID of the one series a SEG annotates (ReferencedSeriesSequence), or None.

    None when the SEG references no series or several (a mask is paired with one item).
    """
    uids = {str(item.get("SeriesInstanceUID", "") or "").strip() for item in ds.get("ReferencedSeriesSequence") or []}
    uids.discard("")
    return uids.pop() if len(uids) == 1 else None


def _upper_values(ds: pydicom.Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return [str(v).strip().upper() for v in values]


def has_overlay(ds: pydicom.Dataset) -> bool:
    """True when the dataset has an overlay plane: Overlay Rows or Overlay Data in a 60xx group (PS3.3 C.9.2).

    Other 60xx elements alone (e.g. Overlay Comments) are text that de-identification
    removes; they do not make the pixels suspect.
    """
    return any(tag.group & 0xFF00 == 0x6000 and tag.group % 2 == 0 and tag.element in (0x0010, 0x3000)
               for tag in ds.keys())


def burned_in_risks(ds: pydicom.Dataset) -> list[tuple[str, str]]:
    """Why ``ds`` may carry text burned into its pixels: ``[(label, explanation)]``, empty if no reason.

    Labels are what ``preprocessing.deid.allow_classes`` lists to allow such images: the
    SOP class keyword (Secondary Capture, ultrasound, visible-light, video, photographic,
    endoscopic and microscopic classes), ``DERIVED`` for secondary images (Image Type
    value 2 SECONDARY, e.g. DERIVED\\SECONDARY: screenshots, reformats with annotations),
    ``OVERLAY`` for images with overlay planes (60xx: annotations drawn over the image).
    """
    risks = []
    dicom_class = classify(ds)
    if dicom_class.keyword and any(part in dicom_class.keyword for part in _TEXT_RISK_KEYWORD_PARTS):
        risks.append((dicom_class.keyword, f"{dicom_class.name} often carries burned-in text"))
    image_type = _upper_values(ds, "ImageType")
    if len(image_type) > 1 and image_type[1] == "SECONDARY":
        shown = "\\".join(image_type[:2])
        risks.append((DERIVED, f"Image Type {shown} (a secondary image) often carries burned-in text"))
    if has_overlay(ds):
        risks.append((OVERLAY, "overlay planes (60xx) mark an annotated image"))
    return risks


@functools.cache
def _class_names() -> dict[str, str]:
    """SOP class keyword -> name, from pydicom's UID dictionary."""
    return {keyword: name for name, kind, _info, _retired, keyword in UID_dictionary.values()
            if kind == "SOP Class" and keyword}


def known_class_names() -> frozenset[str]:
    """Every SOP class name and keyword of pydicom's dictionary, plus DERIVED and OVERLAY (casefolded)."""
    names = {DERIVED, OVERLAY, *_class_names(), *_class_names().values()}
    return frozenset(n.casefold() for n in names)


def class_matches(label: str, allowed: Iterable[str]) -> bool:
    """True when ``label`` (a class keyword, DERIVED or OVERLAY) is in ``allowed`` by keyword or name."""
    wanted = {a.strip().casefold() for a in allowed}
    return label.casefold() in wanted or _class_names().get(label, label).casefold() in wanted


# ------------------------------------------------------------------ duplicates


@dataclass(frozen=True)
class DicomRecord:
    """What ingestion keeps of one readable DICOM image file after its own checks.

    Attributes:
        path: relative source path.
        sop_instance_uid: (0008,0018), or "" when missing.
        sha256: of the file's bytes.
        series: the series key (patient identity, study UID, series UID).
        has_position: a single-frame image with ImagePositionPatient and
            ImageOrientationPatient, which can be ordered among the files of its series.
        class_keyword: SOP class keyword ("" when unknown).
    """

    path: str
    sop_instance_uid: str
    sha256: str
    series: tuple[str, str, str]
    has_position: bool
    class_keyword: str = ""


def deduplicate(records: Sequence[DicomRecord]) -> tuple[list[DicomRecord], list[tuple[DicomRecord, str, str]]]:
    """Keep one file per instance, the first in path order.

    A file is a duplicate when an earlier kept file has the same bytes (sha256) or the same
    SOP Instance UID. Same UID with other bytes is the same instance encoded again (another
    transfer syntax, a re-export, a header edit): it is kept once too, the first by path,
    because UIDs are unique by definition (PS3.5 9.1) and two items from one instance
    would put the same image twice into the data (and possibly into two splits).

    Returns:
        ``(kept, duplicates)``; each duplicate is ``(record, kept path, note)``.
    """
    by_sha: dict[str, str] = {}
    by_uid: dict[str, str] = {}
    kept, duplicates = [], []
    for record in sorted(records, key=lambda r: r.path):
        if record.sha256 in by_sha:
            duplicates.append((record, by_sha[record.sha256], "identical bytes"))
            continue
        if record.sop_instance_uid and record.sop_instance_uid in by_uid:
            duplicates.append((record, by_uid[record.sop_instance_uid],
                               "same SOP Instance UID, other bytes (another encoding or edit of the instance; "
                               "the first by path is kept)"))
            continue
        by_sha[record.sha256] = record.path
        if record.sop_instance_uid:
            by_uid[record.sop_instance_uid] = record.path
        kept.append(record)
    return kept, duplicates


def item_key(record: DicomRecord) -> Hashable:
    """The item a file belongs to: its series, or itself when it cannot be stacked.

    A file without position or orientation cannot be ordered among the other files of its
    series, and a multi-frame file is a volume (or clip) of its own: each is a standalone
    item instead of making the whole series inconsistent.
    """
    return record.series if record.has_position else (*record.series, record.path)


# ------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class FrameGeometry:
    """Where the frames of one multi-frame image lie (patient LPS, mm).

    Attributes:
        positions: ``(frames, 3)`` ImagePositionPatient of each frame.
        row_cosine, column_cosine: ImageOrientationPatient (shared by all frames).
        pixel_spacing: ``(row_mm, col_mm)``; nan when unknown.
        slice_thickness: mm, nan when unknown.
    """

    positions: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_thickness: float


def _group_item(ds: pydicom.Dataset, sequence: str, index: int | None) -> pydicom.Dataset | None:
    """Item ``index`` of a functional groups sequence (None: the shared item), or None."""
    seq = ds.get(sequence)
    if not seq:
        return None
    if index is None:
        return seq[0]
    return seq[index] if index < len(seq) else None


def _macro(ds: pydicom.Dataset, index: int, macro: str, keyword: str):
    """``keyword`` of functional group ``macro`` for frame ``index``: per-frame first, then shared."""
    for item in (_group_item(ds, "PerFrameFunctionalGroupsSequence", index),
                 _group_item(ds, "SharedFunctionalGroupsSequence", None)):
        if item is not None and item.get(macro):
            value = item.get(macro)[0].get(keyword)
            if value is not None:
                return value
    return None


def frame_geometry(ds: pydicom.Dataset) -> FrameGeometry | None:
    """Per-frame geometry of an enhanced multi-frame image, or None when it has none.

    Reads the Plane Position (Patient), Plane Orientation (Patient) and Pixel Measures
    functional groups (PS3.3 C.7.6.16.2.3, .4, .1), per frame or shared. None when the
    dataset has no per-frame functional groups, or a frame lacks a position, or the frames
    do not share one orientation (a volume of such frames has no single slice axis).
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return None
    positions, orientations = [], []
    for index in range(frames):
        position = _macro(ds, index, "PlanePositionSequence", "ImagePositionPatient")
        orientation = _macro(ds, index, "PlaneOrientationSequence", "ImageOrientationPatient")
        if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
            return None
        positions.append([float(v) for v in position])
        orientations.append([float(v) for v in orientation])
    cosines = np.asarray(orientations)
    if not np.allclose(cosines, cosines[0], atol=1e-4):
        return None
    spacing = _macro(ds, 0, "PixelMeasuresSequence", "PixelSpacing")
    thickness = _macro(ds, 0, "PixelMeasuresSequence", "SliceThickness")
    pixel_spacing = (float(spacing[0]), float(spacing[1])) if spacing is not None and len(spacing) == 2 \
        else (math.nan, math.nan)
    return FrameGeometry(np.asarray(positions), cosines[0, :3], cosines[0, 3:], pixel_spacing,
                         float(thickness) if thickness not in (None, "") else math.nan)


def frame_rescale(ds: pydicom.Dataset) -> list[tuple[float, float]] | None:
    """Per-frame ``(slope, intercept)`` from the Pixel Value Transformation functional group, or None.

    Enhanced CT/MR/PET keep the rescale in functional groups (PS3.3 C.7.6.16.2.9), not at
    the top level where the modality LUT of a single-frame image is.
    """
    if "PerFrameFunctionalGroupsSequence" not in ds or "RescaleSlope" in ds:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    out = []
    for index in range(frames):
        slope = _macro(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _macro(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
        if slope is None and intercept is None:
            return None
        out.append((float(slope if slope not in (None, "") else 1.0),
                    float(intercept if intercept not in (None, "") else 0.0)))
    return out


def has_position(ds: pydicom.Dataset) -> bool:
    """True for a single-frame image that can be ordered in its series by its position along the normal."""
    orientation = ds.get("ImageOrientationPatient")
    position = ds.get("ImagePositionPatient")
    single = int(ds.get("NumberOfFrames", 1) or 1) == 1
    return single and position is not None and len(position) == 3 and orientation is not None \
        and len(orientation) == 6
