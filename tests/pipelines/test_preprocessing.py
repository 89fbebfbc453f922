"""Preprocessing: de-identified copies, quarantine, model-ready arrays, a leak-free split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom

from synthmed.core.splits import check_no_leakage
from tests.conftest import MANIFEST_DTYPES
from tests.dicom_factory import SENTINEL


def test_deidentified_copies_hold_no_identifier(processed):
    workdir, _ = processed
    out = workdir / "data/03_primary/deidentified"
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))  # not the checksum listing
    assert {p.suffix for p in files} == {".dcm", ".png", ".gz"}
    for path in files:
        # Names come from pseudonyms only.
        for part in path.relative_to(out).parts[1:]:
            assert part.split(".")[0].removesuffix("_mask").replace("_", "").isalnum()
        data = path.read_bytes()
        assert SENTINEL.encode() not in data.upper()
        assert b"SERIES^PATIENT" not in data and b"SERIES-PAT" not in data
    dicoms = [pydicom.dcmread(p) for p in files if p.suffix == ".dcm"]
    assert len(dicoms) == 5  # sentinel CT + 4-slice series; the US file is quarantined
    assert all(ds.PatientIdentityRemoved == "YES" for ds in dicoms)
    assert all(ds.StudyInstanceUID.startswith("2.25.") for ds in dicoms)
    # The 4-slice series keeps one (remapped) SeriesInstanceUID and distinct instance UIDs.
    by_patient: dict[str, list] = {}
    for ds in dicoms:
        by_patient.setdefault(str(ds.PatientID), []).append(ds)
    series = max(by_patient.values(), key=len)
    assert len(series) == 4
    assert len({ds.SeriesInstanceUID for ds in series}) == 1
    assert len({ds.SOPInstanceUID for ds in series}) == 4


def test_quarantine_and_conservation(processed):
    workdir, _ = processed
    base = workdir / "data/03_primary/preprocessed"
    quarantined = pd.read_csv(base / "quarantined.csv")
    assert len(quarantined) == 1 and "modality US" in quarantined["reason"][0]
    ingested = pd.read_csv(workdir / "data/02_intermediate/ingestion/manifest.csv", dtype=MANIFEST_DTYPES)
    manifest = pd.read_csv(base / "manifest.csv", dtype=MANIFEST_DTYPES)
    assert len(ingested) == len(manifest) + len(quarantined)
    assert quarantined["item_id"][0] not in set(manifest["item_id"])
    audit = pd.read_csv(base / "audit.csv", keep_default_na=False)
    assert len(audit) == len(ingested) and audit["quarantined"].sum() == 1
    assert not manifest.columns.str.contains("source").any()


def test_preprocessed_arrays_are_model_ready(processed):
    _, catalog = processed
    manifest = catalog.load("preprocessed_manifest")
    images, masks, foreground = (catalog.load(n) for n in
                                 ("preprocessed_images", "preprocessed_masks", "preprocessed_foreground"))
    for item in manifest.itertuples():
        image = np.asarray(images[item.item_id])
        assert image.dtype == np.float32 and image.min() >= -1.0 and image.max() <= 1.0
        assert "x".join(map(str, image.shape)) == item.shape
        assert foreground[item.item_id].shape == (1, *image.shape[1:])
        if item.has_mask:
            assert masks[item.item_id].shape == (1, *image.shape[1:])
    head = manifest[manifest["label"] == "brain"].iloc[0]
    # 2 mm source resampled to the test config's 3 mm: 20x24x18 voxels -> 13x16x12.
    assert head["shape"] == "1x13x16x12" and head["spacing_mm"].startswith("3.0")
    # Tissue labels survive nearest-neighbour resampling.
    assert set(np.unique(masks[head["item_id"]])) == {0, 1, 2}


def test_split_table_is_leak_free(processed):
    _, catalog = processed
    table = catalog.load("split_table")
    check_no_leakage(table)
    assert set(table["split"]) == {"train", "validation", "test"}


def test_a_source_changed_after_ingestion_stops_preprocessing(tmp_path, source_folder):
    """Sources preprocessing reads again (NIfTI) are checked against ingestion's checksums; DICOM
    copies come from the candidate layer, whose listing is checked the same way."""
    import pytest

    from synthmed.pipelines import ingestion, preprocessing
    from tests.conftest import project_catalog, run

    source, _ = source_folder
    catalog = project_catalog(tmp_path, source, overrides={"ingestion": {"max_rejection_rate": 0.5}})
    run(ingestion.create_pipeline(), catalog)
    head = (source / "nifti/head.nii.gz").read_bytes()
    (source / "nifti/head.nii.gz").write_bytes(head + b"\x00")
    with pytest.raises(Exception, match="changed since its checksum was recorded"):
        run(preprocessing.create_pipeline(), catalog)
    assert not (tmp_path / "data/03_primary/deidentified").exists()
    (source / "nifti/head.nii.gz").write_bytes(head)
    (copy,) = (tmp_path / "data/02_intermediate/deid_candidates/files").rglob("0001.dcm")  # a series slice
    copy.write_bytes(copy.read_bytes().replace(b"YES", b"NO "))
    with pytest.raises(Exception, match="sha256"):
        run(preprocessing.create_pipeline(), catalog)
    assert not (tmp_path / "data/03_primary/deidentified").exists()


def test_preprocessing_parses_no_raw_dicom_file(processed, monkeypatch):
    """Issue 9 item 11: each DICOM file is parsed once, by ingestion; preprocessing reads its copies."""
    import pydicom

    from synthmed.pipelines import preprocessing

    workdir, catalog = processed
    parsed = []
    real = pydicom.dcmread

    def counting(*args, **kwargs):
        parsed.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    monkeypatch.setattr(pydicom.filereader, "dcmread", counting)
    from tests.conftest import run

    run(preprocessing.create_pipeline().only_nodes("check_pixels", "deidentify_sources"), catalog)
    assert parsed == []
    assert len(list((workdir / "data/03_primary/deidentified/dicom").rglob("*.dcm"))) == 5


def test_a_float_tiff_is_copied_losslessly_as_npy(tmp_path):
    import io

    from PIL import Image

    from synthmed.pipelines import ingestion, preprocessing
    from tests.conftest import project_catalog, run

    source = tmp_path / "source"
    source.mkdir()
    values = np.linspace(-3.5, 1e5, 12 * 10, dtype=np.float32).reshape(12, 10)
    buffer = io.BytesIO()
    Image.fromarray(values, mode="F").save(buffer, format="TIFF")
    (source / "scan.tif").write_bytes(buffer.getvalue())
    catalog = project_catalog(tmp_path, source, overrides={"ingestion": {"labels_csv": None}})
    run(ingestion.create_pipeline() + preprocessing.create_pipeline(), catalog)
    (copy,) = (tmp_path / "data/03_primary/deidentified").rglob("*.npy")
    np.testing.assert_array_equal(np.load(copy, allow_pickle=False), values)
