"""Ingestion of compressed DICOM: every codec decodes, and no single file can stop the run."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from synthmed.pipelines import ingestion
from synthmed.pipelines.ingestion import dicom_pass
from tests.conftest import MANIFEST_DTYPES, project_catalog, read_json, run
from tests.imaging.test_dicom_codecs import ybr_j2k_bytes

LENIENT = {"ingestion": {"max_rejection_rate": 0.5, "labels_csv": None}}
CODEC_FILES = [
    "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_jpeg_lossy_gdcm.dcm", "JPGExtended.dcm", "JPEG2000.dcm",
    "GDCMJ2K_TextGBR.dcm", "JPEGLSNearLossless_16.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm",
]
BOOM = "boom.dcm"


def _own_series(data: bytes) -> bytes:
    """The same file as an instance in a series of its own (some bundled files share a series UID,
    and some are the same instance in another transfer syntax, which ingestion keeps once)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _ingest(tmp_path, source, overrides=LENIENT):
    catalog = project_catalog(tmp_path / "work", source, overrides=overrides)
    run(ingestion.create_pipeline(), catalog)
    base = tmp_path / "work/data/02_intermediate/ingestion"
    return (
        pd.read_csv(base / "manifest.csv", keep_default_na=False, dtype=MANIFEST_DTYPES),
        pd.read_csv(base / "rejected.csv", keep_default_na=False),
        read_json(tmp_path / "work/data/08_reporting/ingestion_metrics.json"),
    )


@pytest.fixture()
def codec_folder(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in CODEC_FILES:
        (source / name).write_bytes(_own_series(open(get_testdata_file(name), "rb").read()))
    (source / "ybr_ict.dcm").write_bytes(_own_series(ybr_j2k_bytes("YBR_ICT")))
    boom = _own_series(open(get_testdata_file("CT_small.dcm"), "rb").read())
    (source / BOOM).write_bytes(boom)
    return source, boom


@pytest.mark.parametrize("error", [NotImplementedError, RuntimeError, MemoryError])
def test_an_unexpected_exception_rejects_its_file_and_the_run_goes_on(tmp_path, codec_folder, monkeypatch, error):
    source, boom = codec_folder
    read_dicom = dicom_pass.read_dicom

    def read_or_fail(data, **kwargs):  # in the per-file pass (scan_dicom_file), in a worker or not
        if data == boom:
            raise error("Conversion from YBR_ICT to RGB is not supported.")
        return read_dicom(data, **kwargs)

    monkeypatch.setattr(dicom_pass, "read_dicom", read_or_fail)
    manifest, rejected, metrics = _ingest(tmp_path, source)

    assert rejected[["source_path", "reason"]].values.tolist() == [[BOOM, "decode_failed"]]
    assert rejected["detail"][0].startswith(f"{error.__name__}: Conversion from YBR_ICT")
    accepted = sorted(p for paths in manifest["source_paths"] for p in paths.split(";"))
    assert accepted == sorted([*CODEC_FILES, "ybr_ict.dcm"])
    assert metrics["files_read"] == 10 == metrics["files_accepted"] + metrics["files_rejected"]
    shapes = dict(zip(manifest["source_paths"], manifest["shape"]))
    assert shapes["ybr_ict.dcm"] == "3x100x100" and shapes["GDCMJ2K_TextGBR.dcm"] == "3x400x400"


def test_whole_pydicom_test_collection_is_accounted_for(tmp_path):
    # The files bundled with pydicom (get_testdata_files would also try to download more).
    bundled = Path(pydicom.data.__file__).parent / "test_files"
    shutil.copytree(bundled, tmp_path / "src")
    start = time.monotonic()
    manifest, rejected, metrics = _ingest(tmp_path, tmp_path / "src",
                                          {"ingestion": {"max_rejection_rate": 1.0, "labels_csv": None}})
    assert time.monotonic() - start < 60
    assert metrics["files_read"] > 80
    accepted = {p for paths in manifest["source_paths"] for p in paths.split(";")}
    assert metrics["files_read"] == len(accepted) + len(rejected)
    assert not accepted & set(rejected["source_path"])
    assert (rejected["detail"] != "").all()
