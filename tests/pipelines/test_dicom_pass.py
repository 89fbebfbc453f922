"""The one pass over a DICOM file at ingestion: what it spills must read back as parsed, and its
de-identified copy must be the one a separate parse and de-identification would give."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from synthmed.datasets.file_folder import encode
from synthmed.pipelines.ingestion import dicom_pass
from synthmed.pipelines.ingestion.dicom_pass import HEADER_KEYWORDS, scan_dicom_file
from synthmed.privacy import dicom_deid
from synthmed.privacy.dicom_deid import DicomDeidConfig, deidentify, quarantine_reason
from tests.conftest import TEST_KEY

# Explicit and implicit VR, big endian, JPEG 2000, an "explicit" file that is implicit (SC_rgb_jpeg),
# and one the profile quarantines (MR_small: a secondary image).
FILES = ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "SC_rgb_jpeg.dcm", "JPEG2000.dcm",
         "MR_small.dcm"]


def _scan(tmp_path, name, config=None):
    source, spill = tmp_path / "src", tmp_path / "spill"
    source.mkdir(exist_ok=True)
    spill.mkdir(exist_ok=True)
    shutil.copy(get_testdata_file(name), source / name)
    scan = scan_dicom_file(source, name, (source / name).stat().st_size, 10**9, spill, 0, TEST_KEY,
                           config or DicomDeidConfig())
    return scan, source, spill


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "SC_rgb_jpeg.dcm", "JPEG2000.dcm"])
def test_the_spilled_header_and_pixels_read_back_as_parsed(tmp_path, name):
    """SC_rgb_jpeg.dcm declares explicit VR and is implicit: its header is written converted."""
    scan, source, spill = _scan(tmp_path, name)
    assert scan.reason == "" and scan.record is not None, scan.detail
    header, pixels = scan.load()
    original = pydicom.dcmread(source / name)
    for keyword in HEADER_KEYWORDS:
        if keyword in original and not keyword.endswith("Sequence"):
            assert header.get(keyword) == original.get(keyword), keyword
    assert pixels.dtype == np.float32 and pixels.shape[-2:] == (original.Rows, original.Columns)
    assert not list(spill.glob("*.pickle"))
    scan.remove_spilled()
    scan.remove_copy()
    assert not list(spill.iterdir())


@pytest.mark.parametrize("name", FILES)
def test_the_copy_of_the_one_pass_is_byte_identical_to_a_separate_deidentification(tmp_path, name, monkeypatch):
    """The pass de-identifies the dataset it already classified and decoded (elements converted on
    the way): the bytes must be those of parsing the file again for de-identification alone.
    Several of these files are quarantined by default (secondary capture, secondary images): the
    rule is switched off here so that each gives a copy to compare."""
    config = DicomDeidConfig()
    header = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)
    at_risk = quarantine_reason(header, config) is not None
    monkeypatch.setattr(dicom_deid, "quarantine_reason", lambda ds, config: None)
    monkeypatch.setattr(dicom_pass, "quarantine_reason", lambda ds, config: None)
    scan, source, _ = _scan(tmp_path, name, config)
    assert scan.reason == "" and scan.deid is not None and not scan.deid.error, scan
    assert scan.deid.body_part == str(header.get("BodyPartExamined", "") or "")
    expected = deidentify(pydicom.dcmread(io.BytesIO((source / name).read_bytes())), TEST_KEY, config, consume=True)
    with open(scan.deid.copy, "rb") as handle:
        assert handle.read() == encode("x.dcm", expected.dataset)
    assert dict(scan.deid.actions) == dict(expected.actions)
    if name in ("MR_small.dcm", "SC_rgb_jpeg.dcm", "JPEG2000.dcm"):
        assert at_risk  # these really are quarantined by default


def test_the_pass_records_what_the_pixel_checks_need_from_the_header(tmp_path):
    for name in ("CT_small.dcm", "JPEG2000.dcm"):
        header = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)
        scan, _, _ = _scan(tmp_path, name)
        assert scan.deid.at_risk == (quarantine_reason(header, DicomDeidConfig()) is not None)
        assert scan.deid.body_part == str(header.get("BodyPartExamined", "") or "")
    assert scan.deid.body_part == "WHOLE BODY" and scan.deid.at_risk


def test_a_quarantined_file_gets_its_reason_and_no_copy(tmp_path):
    scan, _, spill = _scan(tmp_path, "MR_small.dcm")  # Image Type DERIVED\SECONDARY, not allowed
    assert scan.reason == "" and scan.record is not None  # accepted: it is read and decoded
    assert scan.deid.copy is None and scan.deid.at_risk and "DERIVED" in scan.deid.quarantine_reason
    assert not list(spill.glob("*.dcm"))
