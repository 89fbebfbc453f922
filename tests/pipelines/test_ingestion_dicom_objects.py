"""Ingestion of what hospital exports hold besides images: reports, RT objects, DICOMDIR,
copies of one instance, images without position. Every file is accounted for once."""

from __future__ import annotations

import io
import shutil

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from synthmed.pipelines import ingestion
from tests.conftest import MANIFEST_DTYPES, ct_instance, project_catalog, read_json, run
from tests.dicom_factory import dicom_bytes

PARAMS = {"ingestion": {"labels_csv": None, "max_rejection_rate": 0.0}}
NON_IMAGE = {
    "reports/sr.dcm": ("test-SR.dcm", "Comprehensive SR Storage"),
    "rt/plan.dcm": ("rtplan.dcm", "RT Plan Storage"),
    "rt/dose.dcm": ("rtdose.dcm", "RT Dose Storage"),
    "DICOMDIR": ("DICOMDIR", "Media Storage Directory Storage"),
}


def _save(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture()
def export_folder(tmp_path):
    """A hospital-like export built from pydicom's bundled files."""
    source = tmp_path / "export"
    (source / "reports").mkdir(parents=True)
    (source / "rt").mkdir()
    (source / "a").mkdir()
    (source / "b").mkdir()
    (source / "loose").mkdir()
    for rel, (name, _) in NON_IMAGE.items():
        shutil.copy(get_testdata_file(name), source / rel)
    # The same bytes under two names, and one instance in two transfer syntaxes.
    shutil.copy(get_testdata_file("CT_small.dcm"), source / "a/ct.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), source / "b/ct_again.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), source / "a/mr.dcm")
    shutil.copy(get_testdata_file("MR_small_RLE.dcm"), source / "b/mr_rle.dcm")
    # Three instances of one series without ImagePositionPatient: three 2D items.
    series = generate_uid()
    for k in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        del ds.ImagePositionPatient
        (source / f"loose/{k}.dcm").write_bytes(_save(ds))
    return source


def test_non_image_objects_duplicates_and_loose_images(tmp_path, export_folder):
    # max_rejection_rate 0: nothing may be rejected, although half of the files are not read.
    catalog = project_catalog(tmp_path / "work", export_folder, overrides=PARAMS)
    run(ingestion.create_pipeline(), catalog)
    base = tmp_path / "work/data/02_intermediate/ingestion"
    inventory = pd.read_csv(base / "inventory.csv", keep_default_na=False).set_index("source_path")
    rejected = pd.read_csv(base / "rejected.csv", keep_default_na=False)
    manifest = pd.read_csv(base / "manifest.csv", keep_default_na=False, dtype=MANIFEST_DTYPES)
    metrics = read_json(tmp_path / "work/data/08_reporting/ingestion_metrics.json")

    assert rejected.empty
    for rel, (_, class_name) in NON_IMAGE.items():
        assert tuple(inventory.loc[rel, ["role", "reason", "detail"]]) == ("ignored", "non_image", class_name)
    assert tuple(inventory.loc["b/ct_again.dcm", ["role", "reason", "detail"]]) == (
        "ignored", "duplicate_of", "a/ct.dcm (identical bytes)")
    mr = inventory.loc["b/mr_rle.dcm"]
    assert (mr["role"], mr["reason"]) == ("ignored", "duplicate_of")
    assert mr["detail"].startswith("a/mr.dcm (same SOP Instance UID, other bytes")

    items = dict(zip(manifest["source_paths"], manifest["kind"]))
    assert items == {"a/ct.dcm": "image2d", "a/mr.dcm": "image2d", "loose/0.dcm": "image2d",
                     "loose/1.dcm": "image2d", "loose/2.dcm": "image2d"}
    # Every file once: 11 found = 5 accepted + 6 ignored; the rate counts the 5 read only.
    assert (metrics["files_found"], metrics["files_read"], metrics["files_accepted"]) == (11, 5, 5)
    assert (metrics["files_ignored"], metrics["files_non_image"], metrics["ignored_duplicate_of"]) == (6, 4, 2)
    assert metrics["rejection_rate"] == 0.0
    assert metrics["ignored_non_image"] == 4 and "rejected_empty" not in metrics


# ------------------------------------------------------------------ DICOM SEG


def _source_series(study: str, series: str) -> list[pydicom.Dataset]:
    """Three axial CT instances (z = 5, 0, 2.5 in file order; slice k holds 10 * k HU + 400 inside)."""
    out = []
    for k, z in enumerate([5.0, 0.0, 2.5]):
        ds = ct_instance(z, series_uid=series, study_uid=study, value=10 * k)
        # Type 2 attributes highdicom copies from its source images.
        ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", "", ""
        ds.StudyID, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "1", "120000", 1, k + 1
        ds.FrameOfReferenceUID, ds.SliceThickness = study + ".9", 2.5
        out.append(pydicom.dcmread(io.BytesIO(dicom_bytes(ds))))
    return out


def _seg_bytes(sources: list[pydicom.Dataset], mask: np.ndarray) -> bytes:
    """A binary DICOM SEG of ``sources`` (mask ``(len(sources), rows, cols)``) written by highdicom."""
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("27925004", "SCT", "Nodule"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="0", device_serial_number="0")
    out = io.BytesIO()
    seg.save_as(out)
    return out.getvalue()


def test_a_dicom_seg_is_the_mask_of_its_source_series(tmp_path):
    source = tmp_path / "export"
    (source / "ct").mkdir(parents=True)
    sources = _source_series(generate_uid(), generate_uid())
    for k, ds in enumerate(sources):
        (source / f"ct/{k}.dcm").write_bytes(dicom_bytes(ds))
    mask = np.zeros((3, 12, 10), dtype=bool)
    mask[2, 3:6, 2:5] = True  # on the third file: z = 2.5, the middle slice
    (source / "seg.dcm").write_bytes(_seg_bytes(sources, mask))
    shutil.copy(get_testdata_file("liver_1frame.dcm"), source / "orphan_seg.dcm")  # its series is not here

    catalog = project_catalog(tmp_path / "work", source, overrides={"ingestion": {"labels_csv": None}})
    run(ingestion.create_pipeline(), catalog)
    base = tmp_path / "work/data/02_intermediate/ingestion"
    manifest = pd.read_csv(base / "manifest.csv", keep_default_na=False, dtype=MANIFEST_DTYPES)
    rejected = pd.read_csv(base / "rejected.csv", keep_default_na=False)

    (row,) = manifest.itertuples()
    assert (row.has_mask, row.mask_path, row.n_files, row.shape) == (True, "seg.dcm", 4, "1x10x12x3")
    assert rejected[["source_path", "reason"]].values.tolist() == [["orphan_seg.dcm", "mask_without_image"]]
    image = catalog.load("ingested_images")[row.item_id]
    labels = catalog.load("ingested_masks")[row.item_id]
    assert labels.shape == image.shape and labels.dtype == np.uint8
    # The 9 labelled voxels lie on the middle slice (z = 2.5, value 20 + 400 HU) and nowhere else.
    assert int(labels.sum()) == 9 and set(np.nonzero(labels)[3]) == {1}
    assert set(image[labels > 0].tolist()) == {420.0}
