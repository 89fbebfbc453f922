"""Tests for synthmed.imaging.readers: bytes -> channel-first float32 arrays, or a ReadError."""

from __future__ import annotations

import gzip
import io
import math
import re

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    generate_uid,
)

from synthmed.imaging.readers import (
    ReadError,
    decode_dicom_series,
    decode_nifti,
    decode_nifti_mask,
    decode_raster,
    decode_raster_mask,
    dicom_pixels,
    read_dicom,
    sniff_format,
    strip_suffix,
    to_label_mask,
)
from tests.dicom_factory import dicom_bytes

MAX_PIXELS = 1_000_000


def _reason(func, *args, **kwargs) -> str:
    with pytest.raises(ReadError) as caught:
        func(*args, **kwargs)
    return caught.value.reason


# ----------------------------------------------------------------------------- raster


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_raster_8bit_grey() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    decoded = decode_raster(_png(Image.fromarray(pixels)), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (1, 3, 4)
    assert decoded.array.dtype == np.float32
    np.testing.assert_array_equal(decoded.array[0], pixels)
    assert decoded.source_dtype == "uint8"
    assert decoded.kind == "image2d"
    assert all(math.isnan(s) for s in decoded.spacing)


def test_raster_16bit_grey_keeps_values_above_255() -> None:
    pixels = np.array([[0, 1, 40000], [255, 256, 65535]], dtype=np.uint16)
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"
    decoded = decode_raster(_png(image), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (1, 2, 3)
    np.testing.assert_array_equal(decoded.array[0], pixels.astype(np.float32))
    assert decoded.source_dtype == "uint16"


def test_raster_rgb_is_channel_first() -> None:
    rgb = np.zeros((3, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    rgb[0, 0] = (1, 2, 3)
    decoded = decode_raster(_png(Image.fromarray(rgb)), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (3, 3, 4)
    np.testing.assert_array_equal(decoded.array, np.moveaxis(rgb, -1, 0))


def test_raster_rgba_drops_alpha() -> None:
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[..., 3] = np.arange(12, dtype=np.uint8).reshape(3, 4)  # varying transparency
    decoded = decode_raster(_png(Image.fromarray(rgba)), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (3, 3, 4)
    np.testing.assert_array_equal(decoded.array, np.moveaxis(rgba[..., :3], -1, 0))


def test_raster_palette_expands_to_rgb_or_grey() -> None:
    indices = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    colour = Image.fromarray(indices, mode="P")
    colour.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    decoded = decode_raster(_png(colour), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (3, 2, 2)
    np.testing.assert_array_equal(decoded.array[:, 0, 0], [255, 0, 0])
    np.testing.assert_array_equal(decoded.array[:, 1, 0], [0, 0, 255])

    grey = Image.fromarray(indices, mode="P")
    grey.putpalette([v for i in range(256) for v in (i * 10 % 256,) * 3])
    decoded = decode_raster(_png(grey), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (1, 2, 2)
    np.testing.assert_array_equal(decoded.array[0], indices * 10)


def test_raster_grey_stored_as_rgb_collapses_to_one_channel() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 7
    decoded = decode_raster(_png(Image.fromarray(np.stack([grey] * 3, axis=-1))), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (1, 3, 4)
    np.testing.assert_array_equal(decoded.array[0], grey)


@pytest.mark.parametrize(
    "data",
    [b"not an image at all", _png(Image.new("L", (8, 8)))[:40], b"\x89PNG\r\n\x1a\n" + b"\x00" * 30],
    ids=["garbage", "truncated-png", "png-magic-only"],
)
def test_raster_corrupt_bytes_are_unreadable(data: bytes) -> None:
    assert _reason(decode_raster, data, max_pixels=MAX_PIXELS) == "unreadable"


def test_raster_multi_page_tiff_is_unsupported_shape() -> None:
    buffer = io.BytesIO()
    pages = [Image.new("L", (4, 4), 10), Image.new("L", (4, 4), 20)]
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    assert _reason(decode_raster, buffer.getvalue(), max_pixels=MAX_PIXELS) == "unsupported_shape"


def test_raster_too_many_pixels_is_too_large() -> None:
    data = _png(Image.new("L", (4, 3)))
    assert decode_raster(data, max_pixels=12).array.shape == (1, 3, 4)  # the limit is inclusive
    assert _reason(decode_raster, data, max_pixels=11) == "too_large"


def test_raster_mask_maps_255_to_1_and_rejects_colour() -> None:
    mask = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    out = decode_raster_mask(_png(Image.fromarray(mask)), max_pixels=MAX_PIXELS)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[[0, 1], [1, 0]]])
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    assert _reason(decode_raster_mask, _png(Image.fromarray(rgb)), max_pixels=MAX_PIXELS) == "mask_invalid"


# ----------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [("a/IMG.PNG", "raster"), ("x.jpeg", "raster"), ("x.tif", "raster"), ("vol.nii", "nifti"),
     ("p/vol.nii.gz", "nifti"), ("s/0001.dcm", "dicom"), ("s/0001.DICOM", "dicom"),
     ("notes.txt", None), ("archive.gz", None)],
)
def test_sniff_format_by_suffix(relpath: str, expected: str | None) -> None:
    assert sniff_format(relpath, b"\x00" * 132) == expected


def test_sniff_format_by_dicom_magic_for_bare_names() -> None:
    # PS3.10 section 7.1: 128-byte preamble, then "DICM".
    assert sniff_format("series/IM000001", b"\x00" * 128 + b"DICM" + b"\x02\x00") == "dicom"
    assert sniff_format("series/IM000001", b"\x00" * 128 + b"DICX") is None
    assert sniff_format("series/IM000001", b"DICM") is None  # too short to hold the magic


def test_strip_suffix_handles_double_suffixes_and_keeps_folders() -> None:
    assert strip_suffix("p1/vol.nii.gz") == "p1/vol"
    assert strip_suffix("IMG.PNG") == "IMG"
    assert strip_suffix("series/IM0001") == "series/IM0001"


# ----------------------------------------------------------------------------- NIfTI


def _nifti_bytes(data: np.ndarray, affine: np.ndarray | None = None, *, gz: bool = False) -> bytes:
    raw = nib.Nifti1Image(data, np.eye(4) if affine is None else affine).to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def test_nifti_is_reoriented_to_closest_canonical_ras() -> None:
    # LPS-style voxel axes (x and y point to -R and -A), as a DICOM converter may write them.
    volume = np.zeros((4, 5, 6), dtype=np.float32)
    volume[1, 1, 2] = 7.0
    affine = np.diag([-2.0, -3.0, 1.5, 1.0])
    decoded = decode_nifti(_nifti_bytes(volume, affine), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (1, 4, 5, 6)
    assert decoded.kind == "volume"
    # x and y are mirrored: index i -> n - 1 - i (4 - 1 - 1 = 2, 5 - 1 - 1 = 3); z is kept.
    assert np.argwhere(decoded.array == 7.0).tolist() == [[0, 2, 3, 2]]
    assert decoded.spacing == pytest.approx((2.0, 3.0, 1.5))
    assert decoded.source_dtype == "float32"


def test_nifti_gzip_and_plain_decode_the_same() -> None:
    volume = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    plain = decode_nifti(_nifti_bytes(volume), max_pixels=MAX_PIXELS)
    zipped = decode_nifti(_nifti_bytes(volume, gz=True), max_pixels=MAX_PIXELS)
    np.testing.assert_array_equal(plain.array, zipped.array)
    np.testing.assert_array_equal(plain.array[0], volume)
    assert plain.source_dtype == "int16"


def test_nifti_4d_with_one_volume_is_squeezed() -> None:
    volume = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5, 1)
    decoded = decode_nifti(_nifti_bytes(volume), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (1, 3, 4, 5)
    np.testing.assert_array_equal(decoded.array[0], volume[..., 0])


@pytest.mark.parametrize("shape", [(3, 4, 5, 3), (3, 4)], ids=["time-series", "2d"])
def test_nifti_not_a_single_volume_is_unsupported_shape(shape: tuple[int, ...]) -> None:
    data = _nifti_bytes(np.zeros(shape, dtype=np.float32))
    assert _reason(decode_nifti, data, max_pixels=MAX_PIXELS) == "unsupported_shape"


def test_nifti_nan_is_non_finite() -> None:
    volume = np.zeros((3, 4, 5), dtype=np.float32)
    volume[1, 2, 3] = np.nan
    assert _reason(decode_nifti, _nifti_bytes(volume), max_pixels=MAX_PIXELS) == "non_finite"


@pytest.mark.parametrize(
    "data",
    [b"not a nifti file at all " * 20, b"short", b"\x1f\x8b" + b"junk" * 10,
     gzip.compress(b"garbage" * 100), _nifti_bytes(np.zeros((3, 4, 5), np.float32))[:200]],
    ids=["garbage", "short", "bad-gzip", "gzipped-garbage", "cut-header"],
)
def test_nifti_garbage_is_unreadable(data: bytes) -> None:
    assert _reason(decode_nifti, data, max_pixels=MAX_PIXELS) == "unreadable"


def test_nifti_cut_voxel_data_is_truncated() -> None:
    data = _nifti_bytes(np.zeros((3, 4, 5), np.float32))
    assert _reason(decode_nifti, data[:-40], max_pixels=MAX_PIXELS) == "truncated"


def test_nifti_too_many_voxels_and_gzip_bomb_are_too_large() -> None:
    volume = np.zeros((3, 4, 5), dtype=np.float32)
    assert _reason(decode_nifti, _nifti_bytes(volume), max_pixels=59) == "too_large"
    # 4 MiB of zeros compress to a few KiB; the reader stops decompressing at its limit.
    bomb = gzip.compress(_nifti_bytes(volume) + b"\x00" * (4 << 20))
    assert _reason(decode_nifti, bomb, max_pixels=59) == "too_large"


def test_nifti_mask_is_uint8_labels() -> None:
    mask = np.zeros((3, 4, 5), dtype=np.uint8)
    mask[1, 1, 1] = 255
    out = decode_nifti_mask(_nifti_bytes(mask), max_pixels=MAX_PIXELS)
    assert out.dtype == np.uint8
    assert out.shape == (1, 3, 4, 5)
    assert out.sum() == 1


def test_to_label_mask_binary_255_becomes_1_and_labels_are_kept() -> None:
    np.testing.assert_array_equal(to_label_mask(np.array([0.0, 255.0, 0.0]), "m"), [0, 1, 0])
    out = to_label_mask(np.array([0.0, 1.0, 2.0, 7.0]), "m")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 1, 2, 7])


@pytest.mark.parametrize(
    ("values", "shown"), [([0.0, 0.5], "0.0 to 0.5"), ([-1.0, 1.0], "-1.0 to 1.0"), ([0.0, 300.0], "0.0 to 300.0")]
)
def test_to_label_mask_rejects_non_integer_or_out_of_range(values: list[float], shown: str) -> None:
    with pytest.raises(ReadError, match=f"labels mask must hold integer labels .* got values from {shown}"):
        to_label_mask(np.array(values), "labels mask")


# ----------------------------------------------------------------------------- DICOM


def _ct(
    stored: np.ndarray,
    *,
    z_mm: float = 0.0,
    photometric: str = "MONOCHROME2",
    rescale: bool = True,
) -> Dataset:
    """A minimal single-frame CT instance (PS3.3 C.7.6.3 Image Pixel, C.11.1 Modality LUT)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.ImagePositionPatient = [0.0, 0.0, z_mm]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.8]  # (row spacing, column spacing) in mm
    ds.SliceThickness = 2.5
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if rescale:
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = stored.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _read(ds: Dataset) -> Dataset:
    """Write to DICOM bytes and read back, as ingestion does."""
    return read_dicom(dicom_bytes(ds))


def test_dicom_single_frame_ct_is_in_hounsfield_units() -> None:
    stored = np.array([[0, 1024, 2024], [40, 1064, 3000]], dtype=np.int16)
    decoded = decode_dicom_series([_read(_ct(stored))], max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (1, 2, 3)
    assert decoded.array.dtype == np.float32
    # HU = stored * RescaleSlope + RescaleIntercept = stored - 1024.
    np.testing.assert_array_equal(decoded.array[0], [[-1024, 0, 1000], [-984, 40, 1976]])
    assert decoded.spacing == (0.5, 0.8)
    assert decoded.modality == "CT"
    assert decoded.source_dtype == "int16"


def test_dicom_monochrome1_is_inverted_within_the_stored_range() -> None:
    stored = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    ds = _read(_ct(stored, photometric="MONOCHROME1", rescale=False))
    pixels = dicom_pixels(ds, max_pixels=MAX_PIXELS)
    # MONOCHROME1: the minimum is white (PS3.3 C.7.6.3.1.2). Unsigned 16 bits stored span
    # [0, 65535], so a stored v becomes 65535 - v: larger is brighter.
    np.testing.assert_array_equal(pixels, [[[65535, 65435], [65335, 65235]]])


def test_dicom_monochrome1_inverts_every_instance_the_same_way() -> None:
    # Two instances with different content: the same stored value must map to the same
    # output in both (an image-wise min/max inversion would not).
    a = dicom_pixels(_read(_ct(np.array([[0, 100]], dtype=np.uint16), photometric="MONOCHROME1", rescale=False)),
                     max_pixels=MAX_PIXELS)
    b = dicom_pixels(_read(_ct(np.array([[100, 900]], dtype=np.uint16), photometric="MONOCHROME1", rescale=False)),
                     max_pixels=MAX_PIXELS)
    assert a[0, 0, 1] == b[0, 0, 0]


def _series(z_positions: list[float], rows: int = 3, cols: int = 4) -> list[Dataset]:
    """Slice k: stored value 10 * k, with a marker (1000 + k) at row 0, column 0."""
    out = []
    for k, z in enumerate(z_positions):
        stored = np.full((rows, cols), 10 * k, dtype=np.int16)
        stored[0, 0] = 1000 + k
        out.append(_read(_ct(stored, z_mm=z)))
    return out


def test_dicom_series_is_stacked_by_position_whatever_the_file_order() -> None:
    slices = _series([0.0, 2.5, 5.0, 7.5])
    shuffled = [slices[i] for i in (2, 0, 3, 1)]
    decoded = decode_dicom_series(shuffled, max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (1, 4, 3, 4)  # (1, X = columns, Y = rows, Z = slices)
    assert decoded.spacing == pytest.approx((0.8, 0.5, 2.5))
    volume = decoded.array[0]
    for k in range(4):
        # LPS -> RAS mirrors x and y: (row 0, column 0) lands at (X - 1, Y - 1).
        assert volume[3, 2, k] == 1000 + k - 1024
        assert volume[0, 0, k] == 10 * k - 1024


@pytest.mark.parametrize(
    "z_positions", [[0.0, 2.5, 7.5, 10.0], [0.0, 2.5, 2.5, 5.0]], ids=["missing-slice", "duplicate"]
)
def test_dicom_series_with_a_gap_or_duplicate_is_inconsistent(z_positions: list[float]) -> None:
    assert _reason(decode_dicom_series, _series(z_positions), max_pixels=MAX_PIXELS) == "inconsistent_series"


def test_dicom_truncated_pixel_data_is_truncated() -> None:
    ds = _ct(np.zeros((4, 4), dtype=np.int16))
    ds.PixelData = ds.PixelData[:-8]
    assert _reason(dicom_pixels, _read(ds), max_pixels=MAX_PIXELS) == "truncated"


def _compressed(syntax: str) -> Dataset:
    ds = _ct(np.zeros((4, 4), dtype=np.int16))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 16])  # not a real codestream
    ds["PixelData"].VR = "OB"
    return _read(ds)


def test_dicom_compressed_syntax_without_decoder_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hide every installed JPEG 2000 plugin (Pillow may provide one), as on a machine
    # without pylibjpeg, GDCM or Pillow's OpenJPEG.
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    with pytest.raises(ReadError, match=re.escape(JPEG2000Lossless)) as caught:
        dicom_pixels(_compressed(JPEG2000Lossless), max_pixels=MAX_PIXELS)
    assert caught.value.reason == "unsupported"


def test_dicom_jpeg_ls_without_decoder_is_unsupported() -> None:
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    assert _reason(dicom_pixels, _compressed(JPEGLSLossless), max_pixels=MAX_PIXELS) == "unsupported"


def test_dicom_compressed_garbage_with_a_decoder_is_decode_failed() -> None:
    if not get_decoder(JPEG2000Lossless).is_available:
        pytest.skip("no JPEG 2000 decoder is installed")
    assert _reason(dicom_pixels, _compressed(JPEG2000Lossless), max_pixels=MAX_PIXELS) == "decode_failed"


def test_dicom_non_dicom_bytes_are_unreadable() -> None:
    assert _reason(read_dicom, b"this is not DICOM" * 20) == "unreadable"


def test_dicom_too_many_pixels_is_too_large() -> None:
    ds = _read(_ct(np.zeros((4, 4), dtype=np.int16)))
    assert _reason(dicom_pixels, ds, max_pixels=15) == "too_large"


# ----------------------------------------------------------------------------- material from other tools


def test_raster_exif_orientation_is_applied_as_viewers_do() -> None:
    # A camera's portrait photo: pixels stored landscape, EXIF Orientation 6 (rotate 90 degrees clockwise to view).
    stored = np.zeros((20, 30), dtype=np.uint8)
    stored[0, 0] = 255  # top-left as stored lands top-right once viewed
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG", exif=exif)
    decoded = decode_raster(buffer.getvalue(), max_pixels=MAX_PIXELS)
    assert decoded.array.shape == (1, 30, 20)
    assert np.argwhere(decoded.array[0] == 255).tolist() == [[0, 19]]


def test_raster_colour_with_16_bits_per_channel_is_refused_not_cut_to_8() -> None:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.arange(4 * 4 * 3, dtype=np.uint16).reshape(4, 4, 3) * 1000, photometric="rgb")
    with pytest.raises(ReadError, match=r"16 bits per channel \(stored as RGB;16") as caught:
        decode_raster(buffer.getvalue(), max_pixels=MAX_PIXELS)
    assert caught.value.reason == "unsupported"


@pytest.mark.parametrize("kind", ["complex", "rgb"])
def test_nifti_complex_or_rgb_voxels_are_refused_by_name(kind: str) -> None:
    if kind == "complex":
        image = nib.Nifti1Image(np.ones((3, 4, 5), dtype=np.complex64), np.eye(4))
    else:
        rgb = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        image = nib.Nifti1Image(rgb, np.eye(4))
    with pytest.raises(ReadError, match=f"{'complex' if kind == 'complex' else 'RGB'} voxels") as caught:
        decode_nifti(image.to_bytes(), max_pixels=MAX_PIXELS)
    assert caught.value.reason == "unsupported"


def test_nifti_truncated_in_another_orientation_is_truncated() -> None:
    # Not stored in RAS+: the reorientation reads the voxels, and a cut file fails there.
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    raw = _nifti_bytes(volume, np.diag([-1.0, 1.0, 1.0, 1.0]))
    assert _reason(decode_nifti, raw[: len(raw) - 40], max_pixels=MAX_PIXELS) == "truncated"


def test_nifti2_big_endian_is_read() -> None:
    volume = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    raw = nib.Nifti2Image(volume, np.eye(4), header=nib.Nifti2Header(endianness=">")).to_bytes()
    assert raw[:4] == (540).to_bytes(4, "big")
    decoded = decode_nifti(raw, max_pixels=MAX_PIXELS)
    np.testing.assert_array_equal(decoded.array[0], volume)


def test_dicom_palette_colour_goes_through_its_colour_table() -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_color_lut

    ds = dcmread(get_testdata_file("examples_palette.dcm"))
    decoded = decode_dicom_series([read_dicom(dicom_bytes(ds))], max_pixels=10**7)
    assert decoded.kind == "image2d" and decoded.array.shape == (3, int(ds.Rows), int(ds.Columns))
    np.testing.assert_array_equal(decoded.array, np.moveaxis(apply_color_lut(ds.pixel_array, ds), -1, 0))


@pytest.mark.parametrize("what", ["orientation", "spacing"])
def test_dicom_series_with_another_orientation_or_spacing_is_inconsistent(what: str) -> None:
    slices = _series([0.0, 2.5, 5.0, 7.5])
    odd = slices[2]
    odd.InstanceNumber = 3
    if what == "orientation":
        odd.ImageOrientationPatient = [0.0, 1.0, 0.0, -1.0, 0.0, 0.0]  # rotated in-plane, same position
        expected = r"different orientations: .*\[0\.0, 1\.0, 0\.0, -1\.0, 0\.0, 0\.0\] in InstanceNumber 3"
    else:
        odd.PixelSpacing = [1.0, 1.6]
        expected = r"different PixelSpacing: \[0\.5, 0\.8\] mm .*\[1\.0, 1\.6\] mm in InstanceNumber 3"
    with pytest.raises(ReadError, match=expected) as caught:
        decode_dicom_series(slices, max_pixels=MAX_PIXELS)
    assert caught.value.reason == "inconsistent_series"


def test_dicom_localizer_of_a_public_collection_is_named_as_mixed_planes() -> None:
    from pathlib import Path

    from pydicom.data import get_testdata_file

    folder = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests/98892003/MR2"
    datasets = [read_dicom(path.read_bytes()) for path in sorted(folder.iterdir())]
    with pytest.raises(ReadError, match="different orientations"):
        decode_dicom_series(datasets, max_pixels=10**8)


def test_dicom_cine_frames_are_not_stacked_as_slices() -> None:
    ds = _ct(np.zeros((4 * 3, 5), dtype=np.int16))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 3, 5, 4
    ds.FrameTime = 33.3
    ds.FrameIncrementPointer = 0x00181063  # Frame Time: the frames are moments of a cine
    with pytest.raises(ReadError, match="time points .*FrameTime") as caught:
        decode_dicom_series([_read(ds)], max_pixels=MAX_PIXELS)
    assert caught.value.reason == "unsupported_shape"
    ds.FrameIncrementPointer = 0x00209057  # any other pointer: frames in stored order along the normal
    assert decode_dicom_series([_read(ds)], max_pixels=MAX_PIXELS).array.shape == (1, 5, 3, 4)


def test_dicom_float_pixel_data_is_unsupported_not_empty() -> None:
    ds = _ct(np.zeros((2, 2), dtype=np.int16))
    del ds.PixelData
    ds.FloatPixelData = np.zeros((2, 2), dtype=np.float32).tobytes()
    with pytest.raises(ReadError, match="FloatPixelData instead of Pixel Data") as caught:
        dicom_pixels(_read(ds), max_pixels=MAX_PIXELS)
    assert caught.value.reason == "unsupported"
