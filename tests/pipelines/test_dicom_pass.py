"""The one pass over a DICOM file at ingestion: what it spills must read back as parsed."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from synthmed.pipelines.ingestion.dicom_pass import HEADER_KEYWORDS, scan_dicom_file


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "SC_rgb_jpeg.dcm", "JPEG2000.dcm"])
def test_the_spilled_header_and_pixels_read_back_as_parsed(tmp_path, name):
    """SC_rgb_jpeg.dcm declares explicit VR and is implicit: its header is written converted."""
    source, spill = tmp_path / "src", tmp_path / "spill"
    source.mkdir()
    spill.mkdir()
    shutil.copy(get_testdata_file(name), source / name)
    scan = scan_dicom_file(source, name, (source / name).stat().st_size, 10**9, spill, 0)
    assert scan.reason == "" and scan.record is not None, scan.detail
    header, pixels = scan.load()
    original = pydicom.dcmread(source / name)
    for keyword in HEADER_KEYWORDS:
        if keyword in original and not keyword.endswith("Sequence"):
            assert header.get(keyword) == original.get(keyword), keyword
    assert pixels.dtype == np.float32 and pixels.shape[-2:] == (original.Rows, original.Columns)
    assert not list(spill.glob("*.pickle"))
    scan.remove_spilled()
    assert not list(spill.iterdir())
