"""The one pass over each DICOM file at ingestion, and the stacking of series, in workers.

``scan_dicom_file`` runs in a worker process (``synthmed.core.parallel.ordered_map``) for
each file: it reads the bytes, parses them once, classifies the object
(``synthmed.imaging.dicom_objects``), decodes the pixel data once, de-identifies the parsed
dataset (``synthmed.privacy.dicom_deid``: the same pass gives the copy's bytes, its audit
counts and its quarantine decision), and leaves the header elements that series assembly
needs, the decoded pixels and the de-identified copy in a spill folder, so that the parent
process holds a small record per file and neither its pixels nor its copy.
``assemble_dicom_series`` then stacks each series from those spilled pixels (also in a
worker), without decoding again, and writes the item's array for saving. The copies become
the local candidate layer (``deid_candidates``), which preprocessing publishes after the
pixel checks; no later step parses the file again.

Spill format (no pickle): the header is the elements as parsed, written back as a DICOM
data set in the file's own encoding (raw values, no conversion: about 0.2 ms per file), the
pixels an ``.npy`` file, the de-identified copy a ``.dcm`` file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag

from synthmed.core.checksums import sha256_bytes
from synthmed.datasets.file_folder import SourceFolder, encode
from synthmed.imaging.dicom_objects import (
    SEGMENTATION,
    DicomRecord,
    classify,
    ignored_reason,
    segmentation_source_series,
)
from synthmed.imaging.readers import Decoded, ReadError, decode_dicom_series, dicom_pixels, read_dicom
from synthmed.imaging.series import SegRecord, dicom_record
from synthmed.privacy.dicom_deid import DicomDeidConfig, deidentify, dicom_patient_identity, quarantine_reason

# Reason code of a file whose reading or decoding raised an exception no reader anticipated.
DECODE_FAILED = "decode_failed"

# Header elements a scanned file keeps for series assembly (decode_dicom_series, including
# the functional groups of enhanced multi-frame images); the rest stays in the source file.
HEADER_KEYWORDS = (
    "SpecificCharacterSet", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
    "ImageType", "Modality", "PixelRepresentation", "BitsAllocated", "BitsStored", "SamplesPerPixel", "NumberOfFrames",
    "Rows", "Columns", "PixelSpacing", "ImagerPixelSpacing", "SpacingBetweenSlices", "SliceThickness",
    "ImagePositionPatient", "ImageOrientationPatient", "BurnedInAnnotation",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
)
_HEADER_TAGS = tuple(Tag(keyword) for keyword in HEADER_KEYWORDS)


def as_read_error(exc: Exception) -> ReadError:
    """Any exception raised while reading, decoding or handling one file, as that file's rejection.

    A codec or library bug on one file (pydicom's NotImplementedError on a colour space, a
    RuntimeError of a decoder plugin) must reject that file, not stop the run: only
    configuration errors and the configured rejection limits stop ingestion.
    """
    if isinstance(exc, ReadError):
        return exc
    return ReadError(DECODE_FAILED, f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class DeidOutcome:
    """What de-identifying one parsed file gave (small: it crosses process boundaries).

    Attributes:
        copy: where the de-identified file's bytes wait (spill folder), or None.
        actions: the action counts of `deidentify` (never values), sorted by name.
        quarantine_reason: why `deidentify` would not publish the file (header rule), or "".
        error: the exception class when de-identification raised (the text may quote a
            header value, so it is not kept), or "".
        at_risk: the header quarantine rule flags the file (burned-in text likely): the
            pixel checks read such items by OCR.
        body_part: Body Part Examined (the pixel checks' head rule), or "".
    """

    copy: str | None = None
    actions: tuple[tuple[str, int], ...] = ()
    quarantine_reason: str = ""
    error: str = ""
    at_risk: bool = False
    body_part: str = ""


def deidentify_copy(ds: pydicom.Dataset, key: bytes, config: DicomDeidConfig, target: Path) -> DeidOutcome:
    """De-identify ``ds`` (consumed: the caller is done with it) and write the copy to ``target``.

    A file that cannot be de-identified is not rejected (it was read and decoded): its item
    is quarantined by preprocessing, so the outcome carries the error class instead.
    """
    try:
        at_risk = quarantine_reason(ds, config) is not None
        body_part = str(ds.get("BodyPartExamined", "") or "")
    except Exception as exc:  # noqa: BLE001 - one file never stops the run; its item stays out
        return DeidOutcome(error=type(exc).__name__)
    try:
        result = deidentify(ds, key, config, consume=True)
        if result.quarantine_reason is not None:
            return DeidOutcome(quarantine_reason=result.quarantine_reason, at_risk=at_risk, body_part=body_part)
        target.write_bytes(encode(target.name, result.dataset))
    except Exception as exc:  # noqa: BLE001 - as above
        target.unlink(missing_ok=True)
        return DeidOutcome(error=type(exc).__name__, at_risk=at_risk, body_part=body_part)
    return DeidOutcome(str(target), tuple(sorted(result.actions.items())), at_risk=at_risk, body_part=body_part)


@dataclass(frozen=True)
class DicomScan:
    """What the one pass over one DICOM file found (small: it crosses process boundaries).

    Attributes:
        path: relative source path.
        record: an image file's record (deduplication and grouping work on it), else None.
        seg: a DICOM SEG's record (paired with its series later), else None.
        spilled: the spill files' common stem: ``<stem>.hdr`` (header) and ``<stem>.npy``
            (decoded pixels, `dicom_pixels`, float32).
        encoding: ``(is_implicit_VR, is_little_endian)`` of the spilled header.
        class_label: the SOP class keyword or name ("" when the file could not be parsed).
        reason, detail: the rejection, or an ignored reason (``non_image``); "" when usable.
        deid: the de-identification of an image file (its copy is ``<stem>.dcm``), else None.
        description: Series Description and Protocol Name of an image file, read before
            de-identification removes them; ingestion matches it against ``ingestion.series``
            and keeps only the series name it finds, never the text.
    """

    path: str
    record: DicomRecord | None = None
    seg: SegRecord | None = None
    spilled: str | None = None
    encoding: tuple[bool, bool] = (False, True)
    class_label: str = ""
    reason: str = ""
    detail: str = ""
    deid: DeidOutcome | None = None
    description: str = ""

    def load(self) -> tuple[pydicom.Dataset, np.ndarray]:
        """The header and the decoded pixels the worker left in the spill folder."""
        header = read_dataset(DicomBytesIO(Path(f"{self.spilled}.hdr").read_bytes()), *self.encoding)
        return header, np.load(f"{self.spilled}.npy", allow_pickle=False)

    def remove_spilled(self) -> None:
        """Remove the header and pixels (stacked into the item's array, or not needed)."""
        if self.spilled is not None:
            for suffix in (".hdr", ".npy"):
                Path(f"{self.spilled}{suffix}").unlink(missing_ok=True)

    def remove_copy(self) -> None:
        """Remove the de-identified copy (a rejected file, a duplicate, an item that stays out)."""
        if self.deid is not None and self.deid.copy is not None:
            Path(self.deid.copy).unlink(missing_ok=True)


def _header_bytes(elements: dict, encoding: tuple[bool, bool], character_set: list[str]) -> bytes:
    header = pydicom.Dataset(elements)
    header.set_original_encoding(*encoding, character_set)
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = encoding
    write_dataset(fp, header)
    return fp.getvalue()


def _write_header(path: Path, ds: pydicom.Dataset) -> tuple[bool, bool]:
    """The `HEADER_KEYWORDS` elements of ``ds`` to ``path``; returns the encoding written.

    Fast path: the elements as parsed (raw values, no conversion), in the file's own
    encoding. A file whose elements do not match its declared encoding (pydicom reads an
    "explicit VR" file that is in fact implicit) is written from the converted elements in
    explicit VR little endian instead.
    """
    tags = [tag for tag in _HEADER_TAGS if tag in ds]
    declared = ds.original_encoding if None not in ds.original_encoding else (False, True)
    try:
        data, encoding = _header_bytes({t: ds.get_item(t) for t in tags}, declared, ds.original_character_set), declared
    except (TypeError, ValueError, AttributeError):
        encoding = (False, True)
        data = _header_bytes({t: ds[t] for t in tags}, encoding, ds.original_character_set)
    path.write_bytes(data)
    return encoding


def scan_dicom_file(root: Path, rel: str, size: int, max_pixels: int, spill_dir: Path, index: int,
                    key: bytes, deid_config: DicomDeidConfig) -> DicomScan:
    """Read, parse, classify, decode and de-identify one DICOM file: the only time synthmed parses its bytes.

    Runs in a worker process. The file is read through a `SourceFolder` of that one file (the
    boundary check on links is repeated). Non-image objects come back with the ignored reason
    ``non_image``; a DICOM SEG with its `SegRecord`, not decoded here. Every exception while
    reading or decoding becomes the file's rejection; one while de-identifying is kept in
    ``deid`` (the file is accepted, its item quarantined later).
    """
    class_label = ""
    try:
        blob = SourceFolder(root=root, files=(rel,), sizes={rel: size}).read_bytes(rel)
        ds = read_dicom(blob)
        # Issue 9 item 3: what the object is; non-image objects are ignored, not decoded.
        dicom_class = classify(ds)
        class_label = dicom_class.keyword or dicom_class.name
        ignored = ignored_reason(dicom_class)
        if ignored is not None:
            return DicomScan(rel, class_label=class_label, reason=ignored[0], detail=ignored[1])
        if dicom_class.kind == SEGMENTATION:  # a mask: paired with its series by the parent
            seg = SegRecord(rel, sha256_bytes(blob), segmentation_source_series(ds))
            return DicomScan(rel, seg=seg, class_label=class_label)
        pixels = dicom_pixels(ds, max_pixels=max_pixels)
        stem = spill_dir / f"{index:08d}"
        encoding = _write_header(Path(f"{stem}.hdr"), ds)
        # One instance must make an item on its own (multi-frame geometry, colour shape).
        decode_dicom_series([ds], max_pixels=max_pixels, pixels=[pixels])
        record = dicom_record(rel, ds, blob, dicom_patient_identity(ds), dicom_class)
        description = " ".join(str(ds.get(keyword, "") or "") for keyword in ("SeriesDescription", "ProtocolName"))
        np.save(f"{stem}.npy", pixels, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - one file never stops the run (see as_read_error)
        error = as_read_error(exc)
        return DicomScan(rel, class_label=class_label, reason=error.reason, detail=error.detail)
    # Last: de-identification consumes the dataset (no deep copy), so nothing may read it after.
    deid = deidentify_copy(ds, key, deid_config, Path(f"{stem}.dcm"))
    return DicomScan(rel, record=record, spilled=str(stem), encoding=encoding, class_label=class_label, deid=deid,
                     description=description)


@dataclass(frozen=True)
class SeriesAssembly:
    """A stacked series, as `assemble_dicom_series` left it (its array is in ``array_path``)."""

    array_path: str = ""
    spacing: tuple[float, ...] = ()
    source_dtype: str = ""
    modality: str | None = None
    sha256: str = ""
    reason: str = ""
    detail: str = ""

    def decoded(self) -> Decoded:
        """The item as `Decoded`, its array memory-mapped (shape and kind, no data read)."""
        return Decoded(np.load(self.array_path, mmap_mode="r"), self.spacing, self.source_dtype, self.modality)


def assemble_dicom_series(root: Path, scans: list[DicomScan], sizes: Mapping[str, int], max_pixels: int,
                          spill_dir: Path, index: int) -> SeriesAssembly:
    """Stack one series from its decoded instances, in a worker; the array goes to ``spill_dir``.

    The series checksum (sha256 of its files in order) is computed from the bytes read again
    here, each checked against the checksum of the bytes its scan decoded. The per-file
    header and pixel spill files are removed (the de-identified copies stay for saving).
    """
    source = SourceFolder(root=root, files=tuple(sizes), sizes=sizes)
    try:
        headers, pixels = zip(*(scan.load() for scan in scans))
        decoded = decode_dicom_series(headers, max_pixels=max_pixels, pixels=pixels)
        del headers, pixels
        digest = hashlib.sha256()
        for scan in scans:
            blob = source.read_bytes(scan.path)
            if sha256_bytes(blob) != scan.record.sha256:
                raise ReadError("changed_while_reading",
                                f"{scan.path} changed while it was being ingested; run the ingestion again")
            digest.update(blob)
        array_path = spill_dir / f"item-{index:08d}.npy"
        np.save(array_path, decoded.array, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - one series never stops the run
        error = as_read_error(exc)
        return SeriesAssembly(reason=error.reason, detail=error.detail)
    finally:
        for scan in scans:  # the per-file pixels are in the item's array now (or rejected)
            scan.remove_spilled()
    return SeriesAssembly(str(array_path), decoded.spacing, decoded.source_dtype, decoded.modality,
                          digest.hexdigest())
