"""What a DICOM object is, which files are the same instance, and enhanced multi-frame geometry."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from synthmed.imaging.dicom_objects import (
    DUPLICATE_OF,
    IGNORED_REASONS,
    NON_IMAGE,
    DicomRecord,
    burned_in_risks,
    classify,
    deduplicate,
    frame_geometry,
    ignored_reason,
    item_key,
    segmentation_source_series,
)
from synthmed.imaging.readers import ReadError, decode_dicom_series


def _bundled(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


@pytest.mark.parametrize(("name", "class_name"), [
    ("test-SR.dcm", "Comprehensive SR Storage"),
    ("reportsi.dcm", "Basic Text SR Storage"),
    ("rtplan.dcm", "RT Plan Storage"),
    ("rtdose.dcm", "RT Dose Storage"),  # a dose grid, not an image of the patient
    ("waveform_ecg.dcm", "12-lead ECG Waveform Storage"),
    ("DICOMDIR", "Media Storage Directory Storage"),  # class only in the file meta
])
def test_non_image_objects_are_ignored_with_their_class_name(name: str, class_name: str) -> None:
    dicom_class = classify(_bundled(name))
    assert ignored_reason(dicom_class) == (NON_IMAGE, class_name)


def test_images_and_segmentations_are_read() -> None:
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb_rle.dcm", "examples_rgb_color.dcm", "liver_1frame.dcm"):
        assert ignored_reason(classify(_bundled(name))) is None, name
    seg = _bundled("liver_1frame.dcm")
    assert classify(seg).kind == "segmentation"
    assert segmentation_source_series(seg) == seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert {NON_IMAGE, DUPLICATE_OF} == IGNORED_REASONS


def test_an_unknown_class_is_an_image_so_pixel_data_decides() -> None:
    ds = _bundled("CT_small.dcm")
    ds.SOPClassUID = "1.2.3.4.5"
    assert classify(ds).kind == "image" and ignored_reason(classify(ds)) is None
    del ds.SOPClassUID
    assert classify(ds).kind == "image"


def test_burned_in_risks_name_the_class_secondary_images_and_overlays() -> None:
    assert burned_in_risks(_bundled("CT_small.dcm")) == []
    assert [label for label, _ in burned_in_risks(_bundled("examples_rgb_color.dcm"))] == ["UltrasoundImageStorage"]
    sc = _bundled("SC_rgb_rle.dcm")  # Secondary Capture, Image Type DERIVED\SECONDARY
    assert [label for label, _ in burned_in_risks(sc)] == ["SecondaryCaptureImageStorage", "DERIVED"]
    # An MR reformat with overlay planes (60xx).
    assert [label for label, _ in burned_in_risks(_bundled("examples_overlay.dcm"))] == ["DERIVED", "OVERLAY"]


def _record(path: str, uid: str, sha: str, position: bool = True) -> DicomRecord:
    return DicomRecord(path, uid, sha, ("patient", "study", "series"), position)


def test_copies_of_one_instance_are_kept_once_first_by_path() -> None:
    records = [_record("b/copy.dcm", "1.1", "aaa"), _record("a/first.dcm", "1.1", "aaa"),
               _record("c/recoded.dcm", "1.1", "bbb"), _record("d/renamed.dcm", "1.2", "aaa"),
               _record("e/other.dcm", "1.3", "ccc")]
    kept, duplicates = deduplicate(records)
    assert [r.path for r in kept] == ["a/first.dcm", "e/other.dcm"]
    assert [(r.path, kept_path) for r, kept_path, _ in duplicates] == [
        ("b/copy.dcm", "a/first.dcm"), ("c/recoded.dcm", "a/first.dcm"), ("d/renamed.dcm", "a/first.dcm")]
    notes = [note for *_, note in duplicates]
    assert notes[0] == "identical bytes" and notes[1].startswith("same SOP Instance UID, other bytes")


def test_files_without_position_are_items_of_their_own() -> None:
    placed = [_record(f"s/{k}.dcm", f"1.{k}", str(k)) for k in range(3)]
    loose = [_record(f"s/x{k}.dcm", f"2.{k}", f"x{k}", position=False) for k in range(2)]
    keys = {item_key(r) for r in placed + loose}
    assert len(keys) == 1 + 2


# ------------------------------------------------------------------ enhanced multi-frame


def _enhanced_ct(z_positions: list[float], *, pixel_mm: float = 0.5) -> Dataset:
    """An Enhanced CT with one frame per z position (frame k filled with 10 * k + 1024 stored)."""
    rows, cols = 6, 5
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality, ds.PatientID = "CT", "ENH"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, len(z_positions)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    shared = Dataset()
    orientation, measures, rescale = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [pixel_mm, pixel_mm], 2.5
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, -1024, "HU"
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for z in z_positions:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [0.0, 0.0, z]
        item.PlanePositionSequence = Sequence([plane])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    pixels = np.stack([np.full((rows, cols), 1024 + 10 * k, dtype=np.uint16) for k in range(len(z_positions))])
    ds.PixelData = pixels.tobytes()
    return ds


def test_enhanced_multiframe_frames_are_sorted_along_the_normal_with_their_spacing() -> None:
    # Frames stored from top to bottom: frame k (value 10 * k HU) lies at z = 7.5 - 2.5 * k.
    ds = _enhanced_ct([7.5, 5.0, 2.5, 0.0])
    geometry = frame_geometry(ds)
    assert geometry is not None and geometry.pixel_spacing == (0.5, 0.5)
    decoded = decode_dicom_series([ds], max_pixels=10**6)
    assert decoded.kind == "volume" and decoded.array.shape == (1, 5, 6, 4)
    assert decoded.spacing == (0.5, 0.5, 2.5)
    # Sorted by z (RAS+, z up): the frame at z = 0 (value 30 HU) first.
    assert [float(decoded.array[0, 0, 0, k]) for k in range(4)] == [30.0, 20.0, 10.0, 0.0]


def test_enhanced_multiframe_with_a_missing_frame_is_an_inconsistent_series() -> None:
    with pytest.raises(ReadError, match="uneven frames spacing") as error:
        decode_dicom_series([_enhanced_ct([0.0, 2.5, 7.5])], max_pixels=10**6)
    assert error.value.reason == "inconsistent_series"


def test_multiframe_without_functional_groups_has_no_frame_geometry() -> None:
    ds = _enhanced_ct([0.0, 2.5])
    del ds.PerFrameFunctionalGroupsSequence
    assert frame_geometry(ds) is None
    assert math.isnan(decode_dicom_series([ds], max_pixels=10**6).spacing[2])
