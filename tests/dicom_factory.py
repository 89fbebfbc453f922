"""Synthetic DICOM test data: a valid CT image with a sentinel string in every identifying slot.

``make_sentinel_dicom`` writes the sentinel into every PS3.15 Table E.1-1 attribute whose
dictionary VR is a text VR, at the top level and two sequence levels deep (inside sequences
the table does not list, so only recursion can clean them), and into private elements. UIDs
cannot hold letters, so they carry ``sentinel_digits(sentinel)`` (the sentinel's ASCII codes)
instead; ``uid_values`` lists them for "no original UID survives" checks. No patient data.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

from synthmed.privacy.dicom_deid import TABLE_EDITION

SENTINEL = "SNTLXQZ"
PRIVATE_CREATOR = "SNTL PRIVATE"
PRIVATE_GROUP = 0x0011
TEXT_VRS = ("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT")
OUTER_SEQUENCE = "ReferencedSeriesSequence"  # (0008,1115): not in Table E.1-1
INNER_SEQUENCE = "ReferencedInstanceSequence"  # (0008,114A): not in Table E.1-1
# pydicom's UID root (PS3.5 B.2); the factory's UIDs are "<root><digits>.<n>".
_UID_ROOT = "1.2.826.0.1.3680043.8.498."
# Original dates; "remove" tests search the output for each of them.
DATES = {
    "StudyDate": "20210314", "SeriesDate": "20210315", "AcquisitionDate": "20210316",
    "ContentDate": "20210317", "InstanceCreationDate": "20210318",
    "PatientBirthDate": "19700102",
}
DATETIMES = {"AcquisitionDateTime": "20210316101530.123456"}
TIMES = {"StudyTime": "101500", "SeriesTime": "101510", "ContentTime": "101520"}


def sentinel_digits(sentinel: str = SENTINEL) -> str:
    """The sentinel as digits (its ASCII codes), so that it can live inside UIDs."""
    return "".join(str(ord(c)) for c in sentinel)


def _text_value(vr: str, sentinel: str) -> str:
    """A VR-valid value that contains the sentinel (PS3.5 Table 6.2-1 lengths)."""
    if vr in ("AE", "CS", "SH"):  # <= 16 characters; CS: uppercase, digits, space, "_"
        return sentinel
    if vr == "PN":
        return f"{sentinel}^NAME"
    if vr == "UR":  # a URI: no spaces
        return f"https://{sentinel}.example/"
    return f"{sentinel} free text"


def _table_text_tags() -> list[tuple[int, str]]:
    """(tag, VR) of every Table E.1-1 attribute with a text VR in pydicom's dictionary."""
    database = dicom_anonymization_database_selector(f"dicomfields_{TABLE_EDITION}")
    tags: list[tuple[int, str]] = []
    for category, entries in database.items():
        if category == "ALL_TAGS":
            continue
        for entry in entries:
            # Repeating groups (50xx, 60xx) are represented by their first group.
            tag = (entry[0] << 16) | entry[1]
            try:
                vr = dictionary_VR(tag)
            except KeyError:  # newer than pydicom's dictionary: no VR to write it with
                continue
            if vr in TEXT_VRS:
                tags.append((tag, vr))
    return sorted(set(tags))


def _add_sentinel_attributes(ds: Dataset, sentinel: str) -> None:
    for tag, vr in _table_text_tags():
        ds.add_new(tag, vr, _text_value(vr, sentinel))


def _add_private_block(ds: Dataset, sentinel: str) -> None:
    """A private block (creator "SNTL PRIVATE") with sentinel values and one harmless DS."""
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", f"{sentinel} private long")
    block.add_new(0x02, "SH", sentinel)
    block.add_new(0x03, "UT", f"private {sentinel} text")
    block.add_new(0x04, "DS", "1.5")
    item = Dataset()
    item.add_new(0x00100010, "PN", f"{sentinel}^PRIVATESEQ")
    block.add_new(0x05, "SQ", Sequence([item]))


def make_sentinel_dicom(
    sentinel: str = SENTINEL,
    *,
    patient_id: str = "PAT-SNTLXQZ-001",
    rows: int = 16,
    cols: int = 16,
    modality: str = "CT",
) -> Dataset:
    """A valid, writable CT image carrying ``sentinel`` in every identifying slot.

    Args:
        sentinel: uppercase letters, at most 16 characters (it must fit CS, AE and SH).
        patient_id: the PatientID (the default contains the sentinel).
        rows, cols: image size in pixels; pixels are int16 stored values, HU = value - 1024.
        modality: the Modality (0008,0060) value.
    """
    if not (sentinel.isalpha() and sentinel.isupper() and len(sentinel) <= 16):
        raise ValueError(f"sentinel must be 1-16 uppercase letters, got {sentinel!r}.")
    digits = sentinel_digits(sentinel)

    def uid(n: int) -> str:
        return f"{_UID_ROOT}{digits}.{n}"

    ds = Dataset()
    _add_sentinel_attributes(ds, sentinel)  # table attributes first; real values override
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid(1)
    ds.StudyInstanceUID = uid(2)
    ds.SeriesInstanceUID = uid(3)
    ds.FrameOfReferenceUID = uid(4)
    ds.InstanceCreatorUID = uid(5)
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = f"{sentinel}^NAME"
    for keyword, value in {**DATES, **DATETIMES, **TIMES}.items():
        setattr(ds, keyword, value)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0

    # Two levels deep, in sequences the table does not list: only recursion cleans these.
    inner = Dataset()
    _add_sentinel_attributes(inner, sentinel)
    inner.ReferencedSOPClassUID = CTImageStorage
    inner.ReferencedSOPInstanceUID = uid(6)
    inner.ContentDate = DATES["ContentDate"]
    _add_private_block(inner, sentinel)
    outer = Dataset()
    outer.SeriesInstanceUID = uid(7)
    setattr(outer, INNER_SEQUENCE, Sequence([inner]))
    setattr(ds, OUTER_SEQUENCE, Sequence([outer]))
    _add_private_block(ds, sentinel)

    # PS3.3 C.7.6.3 Image Pixel and C.11.1 Modality LUT: int16 with rescale to HU.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    pixels = (np.arange(rows * cols, dtype=np.int16).reshape(rows, cols) * 7) % 2000
    ds.PixelData = pixels.astype(np.int16).tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.SourceApplicationEntityTitle = sentinel  # (0002,0016) AE: also identifying
    ds.file_meta = meta
    return ds


def uid_values(ds: Dataset) -> dict[str, str]:
    """Every UI value in ``ds`` and its sequences (file meta included): value -> keyword."""
    found: dict[str, str] = {}

    def visit(level: Dataset) -> None:
        for element in level:
            if element.VR == "SQ":
                for item in element.value:
                    visit(item)
            elif element.VR == "UI" and element.value:
                values = element.value if element.VM > 1 else [element.value]
                found.update({str(v): element.keyword for v in values})

    visit(ds)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        visit(file_meta)
    return found


def dicom_bytes(ds: Dataset) -> bytes:
    """``ds`` written as a DICOM file (preamble, "DICM", file meta) into memory."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
