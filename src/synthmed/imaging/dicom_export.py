"""A volume as a DICOM MR series the way scanners export it: one file per axial slice.

The geometry follows PS3.3 C.7.6.2: the volume is reoriented to LPS (columns run to the
patient's left, rows to posterior, slices to superior), so ImageOrientationPatient is
``1\\0\\0\\0\\1\\0``, ImagePositionPatient is the centre of the first voxel of each slice in
LPS mm, PixelSpacing is (row spacing, column spacing). Pixels are the volume's uint16 values
as stored (no rescale), so reading the series back gives the exported volume exactly.

The test cohort writes its series with fictitious identities and an ``ORIGINAL`` image type;
synthetic volumes (``synthmed.generators.volume_export``) use the same writer with a
``DERIVED\\SECONDARY\\SYNTHETIC`` image type, no identities and a rescale (``SeriesHeader``).

All UIDs come from `uid`, a hash of the seed and the object's name: the same cohort has the
same UIDs, a different seed different ones, and nothing random is drawn at write time.

`segmentation_file` writes a label map of such a series as a DICOM SEG (highdicom, binary
segments, one frame per slice and segment, referencing the series' instances): segment
number = label value, so a reader that combines the segments gets the label map back.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from synthmed.core.lazy import lazy_import

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
nib = lazy_import("nibabel")

# The private block carried by every exported file (PS3.5 7.8: group 0x0011, one creator).
PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "SYNTHMED TEST COHORT"
LPS_AXES = ("L", "P", "S")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def uid(seed: int, *names: str) -> str:
    """A deterministic ``2.25.`` UID (PS3.5 B.2: a 128-bit number written in decimal) hashed
    from the cohort seed and the object's names. (pydicom's ``generate_uid(prefix=None)``
    draws a random UUID whatever its entropy sources, so it cannot be used here.)"""
    digest = hashlib.sha256("\x00".join(["synthmed-cohort", str(seed), *names]).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


@dataclass(frozen=True)
class SeriesHeader:
    """What one series' files share: identities (fictitious), study and series descriptors."""

    patient: Mapping[str, str]   # DICOM keyword -> value of the Patient/Study/equipment modules
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_number: int
    series_description: str
    sequence: Mapping[str, str]  # MR acquisition keywords (ScanningSequence, EchoTime, ...)
    private: Mapping[int, str]   # private element offset (0x01..) -> LO value; empty: no private block
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND")
    extra: Mapping[str, Any] = field(default_factory=dict)  # keyword -> value, set last (overrides)


def to_lps(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` reoriented so its axes run to L, P, S, and the matching RAS affine."""
    image = nib.Nifti1Image(volume, affine)
    current = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(LPS_AXES)
    transform = nib.orientations.ornt_transform(current, target)
    reoriented = image.as_reoriented(transform)
    return np.asarray(reoriented.dataobj), reoriented.affine


def _ds(value: float) -> str:
    """A decimal string (VR DS, at most 16 characters) without float noise."""
    return f"{round(float(value), 6):.10g}"


def series_files(volume: np.ndarray, affine: np.ndarray, header: SeriesHeader, *, seed: int) -> list[bytes]:
    """One DICOM file (bytes) per axial slice of ``volume``, inferior to superior.

    Args:
        volume: uint16 ``(X, Y, Z)`` with axis-aligned ``affine`` (voxel -> RAS mm).
        header: identities and descriptors shared by the series.
        seed: the cohort seed (SOP Instance UIDs).

    Raises:
        ValueError: the volume is not uint16 3D, or the affine is oblique (not supported).
    """
    if volume.ndim != 3 or volume.dtype != np.uint16:
        raise ValueError(f"series_files exports a 3D uint16 volume, got {volume.dtype} {volume.shape}.")
    data, ras = to_lps(volume, affine)
    lps = _RAS_TO_LPS @ ras
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    cosines = lps[:3, :3] / spacing
    if not np.allclose(cosines, np.eye(3), atol=1e-6):
        raise ValueError(f"series_files exports axis-aligned volumes; the affine's directions are {cosines.tolist()}.")
    files = []
    for k in range(data.shape[2]):
        position = lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]
        ds = _slice_dataset(data[:, :, k].T, position, spacing, k, header, seed)
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        files.append(buffer.getvalue())
    return files


def _slice_dataset(pixels: np.ndarray, position: np.ndarray, spacing: np.ndarray, k: int, header: SeriesHeader,
                   seed: int) -> pydicom.Dataset:
    """One MR Image Storage instance; ``pixels`` is ``(rows, columns)`` = (P, L) axes."""
    sop_uid = uid(seed, header.series_uid, str(k))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(header.image_type)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "MR"
    for keyword, value in header.patient.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID = header.study_uid
    ds.SeriesInstanceUID = header.series_uid
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.SeriesNumber = header.series_number
    ds.SeriesDescription = header.series_description
    ds.ProtocolName = header.series_description
    ds.InstanceNumber = k + 1
    ds.AcquisitionNumber = 1
    for keyword, value in header.sequence.items():
        setattr(ds, keyword, value)
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = _ds(position[2])
    ds.SliceThickness = _ds(spacing[2])
    ds.SpacingBetweenSlices = _ds(spacing[2])
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # (between rows = P, between columns = L)
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = "600"
    ds.WindowWidth = "1200"
    if header.private:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        for offset, value in sorted(header.private.items()):
            block.add_new(offset, "LO", value)
    for keyword, value in header.extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds



# ----------------------------------------------------------------------------- segmentation


@dataclass(frozen=True)
class Segment:
    """One segment of a DICOM SEG: ``number`` is the label value it holds in the label map."""

    number: int
    label: str
    category: Code        # SegmentedPropertyCategoryCodeSequence (SNOMED CT, PS3.16 CID 7150)
    property_type: Code   # SegmentedPropertyTypeCodeSequence


@dataclass(frozen=True)
class SegHeader:
    """The SEG series' own descriptors (patient and study are copied from its source images)."""

    series_uid: str
    series_number: int
    series_description: str
    algorithm_name: str
    algorithm_version: str
    private: Mapping[int, str]   # private element offset (0x01..) -> LO value, as in `SeriesHeader`


def segmentation_file(labels: np.ndarray, affine: np.ndarray, source_blobs: list[bytes], segments: list[Segment],
                      header: SegHeader, *, seed: int) -> bytes:
    """A DICOM SEG (bytes) of the label map ``labels`` of the series ``source_blobs``.

    Args:
        labels: uint8 ``(X, Y, Z)`` on the grid of the exported volume (same ``affine``).
        source_blobs: the series' files as `series_files` returned them (slice k = file k).
        segments: one per label value 1..n, numbered 1..n in order; 0 is background.
        header: the SEG series' UID, number, description, algorithm and private block.
        seed: the cohort seed (the SEG's SOP Instance UID and the UIDs highdicom draws).

    Raises:
        ValueError: labels not uint8 3D, segments not numbered 1..n, a label without a
            segment, or a number of slices other than the number of source files.
    """
    if labels.ndim != 3 or labels.dtype != np.uint8:
        raise ValueError(f"segmentation_file exports a 3D uint8 label map, got {labels.dtype} {labels.shape}.")
    numbers = [segment.number for segment in segments]
    if numbers != list(range(1, len(segments) + 1)):
        raise ValueError(f"DICOM SEG segments are numbered 1..n in order (PS3.3 C.8.20.2); got {numbers}.")
    unknown = sorted(set(np.unique(labels).tolist()) - {0, *numbers})
    if unknown:
        raise ValueError(f"The label map holds values {unknown} that no segment describes (segments {numbers}).")
    data, _ = to_lps(labels, affine)
    if data.shape[2] != len(source_blobs):
        raise ValueError(f"The label map has {data.shape[2]} axial slices, the series {len(source_blobs)} files.")
    sources = [pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True) for blob in source_blobs]
    # Frame k annotates source file k: the same (rows = P, columns = L) layout as `series_files`.
    frames = np.stack([data[:, :, k].T for k in range(data.shape[2])])
    algorithm = hd.AlgorithmIdentificationSequence(
        name=header.algorithm_name, version=header.algorithm_version,
        family=Code("110001", "DCM", "Image Processing"))
    descriptions = [hd.seg.SegmentDescription(
        segment_number=segment.number, segment_label=segment.label,
        segmented_property_category=segment.category, segmented_property_type=segment.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        for segment in segments]
    first = sources[0]
    date, time = str(first.get("SeriesDate") or first.StudyDate), str(first.get("SeriesTime") or first.StudyTime)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=header.series_uid,
        series_number=header.series_number, sop_instance_uid=uid(seed, header.series_uid, "0"), instance_number=1,
        manufacturer=str(first.get("Manufacturer", "")), manufacturer_model_name=header.algorithm_name,
        software_versions=header.algorithm_version, device_serial_number=str(first.get("DeviceSerialNumber", "")),
        series_description=header.series_description, content_date=date, content_time=time,
        series_date=date, series_time=time, content_label="LABELS",
        content_description=header.series_description[:64])
    _pin_generated_values(seg, date, time, uid(seed, header.series_uid, "dimension-organization"))
    block = seg.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    for offset, value in sorted(header.private.items()):
        block.add_new(offset, "LO", value)
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def _pin_generated_values(ds: pydicom.Dataset, date: str, time: str, dimension_uid: str) -> None:
    """Replace what highdicom takes from the clock or draws at random (instance creation date
    and time, the contribution date-time, the dimension organisation UID) with values derived
    from the series, so the same cohort gives the same bytes."""
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time

    def pin(dataset: pydicom.Dataset, element: pydicom.DataElement) -> None:
        if element.keyword == "DimensionOrganizationUID":
            element.value = dimension_uid
        elif element.keyword == "ContributionDateTime":
            element.value = f"{date}{time}"

    ds.walk(pin)
