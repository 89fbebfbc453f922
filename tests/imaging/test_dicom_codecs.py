"""Compressed DICOM through synthmed's reader, with pydicom's bundled test files (no download)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000, JPEG2000Lossless

from synthmed.imaging import readers
from synthmed.imaging.readers import ReadError
from synthmed.imaging.series import decode_item

MAX_PIXELS = 10**8


def _bytes_of(name: str) -> bytes:
    path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"pydicom test file {name} is not bundled with this pydicom")
    with open(path, "rb") as handle:
        return handle.read()


def ybr_j2k_bytes(photometric: str) -> bytes:
    """An RGB image as colour JPEG 2000 with the multi-component transform, as scanners write it.

    YBR_RCT is the reversible (lossless) transform, YBR_ICT the irreversible (lossy) one; the
    bundled pydicom files have YBR_RCT only, so YBR_ICT is made here from an RGB file.
    """
    ds = pydicom.dcmread(io.BytesIO(_bytes_of("SC_rgb_rle.dcm")))
    rgb = ds.pixel_array
    if photometric == "YBR_ICT":
        ds.compress(JPEG2000, rgb, use_mct=True, j2k_psnr=[80])
    else:
        ds.compress(JPEG2000Lossless, rgb, use_mct=True)
    ds.PhotometricInterpretation = photometric
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("SC_rgb_jpeg_gdcm.dcm", (3, 100, 100)),  # JPEG lossless, RGB
        ("SC_rgb_jpeg_lossy_gdcm.dcm", (3, 100, 100)),  # JPEG baseline, YBR_FULL
        ("JPGExtended.dcm", (1, 1024, 256)),  # JPEG extended (process 2 and 4), 12-bit
        ("JPEG2000.dcm", (1, 1024, 256)),
        ("MR_small_jp2klossless.dcm", (1, 64, 64)),
        ("GDCMJ2K_TextGBR.dcm", (3, 400, 400)),  # JPEG 2000 lossless, YBR_RCT
        ("JPEGLSNearLossless_16.dcm", (1, 50, 10)),
        ("MR_small_RLE.dcm", (1, 64, 64)),
        ("SC_rgb_rle.dcm", (3, 100, 100)),
    ],
)
def test_compressed_transfer_syntaxes_decode_to_the_right_shape(name, shape):
    decoded = decode_item("dicom", [_bytes_of(name)], MAX_PIXELS)
    assert decoded.array.shape == shape and decoded.array.dtype == np.float32
    assert np.isfinite(decoded.array).all() and decoded.array.max() > decoded.array.min()


@pytest.mark.parametrize("photometric", ["YBR_ICT", "YBR_RCT"])
def test_colour_jpeg2000_with_ybr_ict_or_rct_is_accepted_as_rgb(photometric):
    reference = decode_item("dicom", [_bytes_of("SC_rgb_rle.dcm")], MAX_PIXELS).array
    decoded = decode_item("dicom", [ybr_j2k_bytes(photometric)], MAX_PIXELS).array
    assert decoded.shape == (3, 100, 100)
    # The codec undoes the transform: the pixels are the RGB values, not converted a second time.
    assert np.abs(decoded - reference).max() <= 2.0


def test_ybr_full_jpeg_is_converted_to_rgb_once():
    lossless = decode_item("dicom", [_bytes_of("SC_rgb_jpeg_gdcm.dcm")], MAX_PIXELS).array
    lossy_ybr = decode_item("dicom", [_bytes_of("SC_rgb_jpeg_lossy_gdcm.dcm")], MAX_PIXELS).array
    # Same picture; a second YBR->RGB conversion would shift colours by tens of grey levels.
    assert np.abs(lossy_ybr - lossless).mean() < 3.0


def test_jpeg2000_lossless_equals_the_uncompressed_file():
    plain = decode_item("dicom", [_bytes_of("MR_small.dcm")], MAX_PIXELS).array
    j2k = decode_item("dicom", [_bytes_of("MR_small_jp2klossless.dcm")], MAX_PIXELS).array
    np.testing.assert_array_equal(j2k, plain)


def test_a_missing_decoder_names_the_package_to_install(monkeypatch):
    decoder = pydicom.pixels.get_decoder(JPEG2000)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    with pytest.raises(ReadError, match="pylibjpeg-openjpeg==2.6.0") as info:
        decode_item("dicom", [_bytes_of("JPEG2000.dcm")], MAX_PIXELS)
    assert info.value.reason == "unsupported"


@pytest.mark.parametrize("error", [NotImplementedError, RuntimeError, KeyError])
def test_any_codec_exception_is_a_decode_failed_read_error(monkeypatch, error):
    def broken(ds):
        raise error("Conversion from YBR_ICT to RGB is not supported.")

    monkeypatch.setattr(readers, "_decode_pixel_data", broken)
    with pytest.raises(ReadError) as info:
        decode_item("dicom", [_bytes_of("MR_small_RLE.dcm")], MAX_PIXELS)
    assert info.value.reason == "decode_failed"
    assert f"{error.__name__}:" in info.value.detail and "YBR_ICT" in info.value.detail


def test_a_corrupt_jpeg_extended_file_is_decode_failed_with_the_codec_message():
    # pydicom's JPEG-lossy.dcm has a misplaced marker that libjpeg refuses.
    with pytest.raises(ReadError) as info:
        decode_item("dicom", [_bytes_of("JPEG-lossy.dcm")], MAX_PIXELS)
    assert info.value.reason == "decode_failed"
    assert "1.2.840.10008.1.2.4.51" in info.value.detail and "RuntimeError" in info.value.detail
