"""Decoders from file bytes to arrays, for the three families of input.

Every decoder takes bytes (never a path), returns a ``Decoded`` with a channel-first
``float32`` array, and raises ``ReadError`` with a short reason code when the input cannot
be used. Array conventions:

- 2D image: ``(C, H, W)``, C = 1 (grey) or 3 (RGB), spacing ``(row_mm, col_mm)``;
- volume: ``(1, X, Y, Z)`` in closest-canonical RAS+ voxel order (nibabel's
  ``as_closest_canonical``), spacing ``(x_mm, y_mm, z_mm)``.

Unknown spacing is ``nan``. Values are the stored intensities after the DICOM modality
LUT (Hounsfield units for CT) or the NIfTI scaling; no windowing happens here.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError

from synthmed.core.lazy import lazy_import
from synthmed.imaging.dicom_objects import FrameGeometry, frame_geometry, frame_rescale
from synthmed.imaging.formats import DICOM_SUFFIXES, FORMATS, NIFTI_SUFFIXES, RASTER_SUFFIXES  # noqa: F401  (re-exported)

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
nib = lazy_import("nibabel")


# PS3.10 section 7.1: a DICOM file has a 128-byte preamble followed by "DICM".
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"


class ReadError(ValueError):
    """An input that cannot be used. ``reason`` is a short code for tables and metrics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Decoded:
    """A decoded item: ``array`` float32 (C, H, W) or (1, X, Y, Z); ``spacing`` in mm."""

    array: np.ndarray
    spacing: tuple[float, ...]
    source_dtype: str
    modality: str | None = None

    @property
    def kind(self) -> str:
        return "volume" if self.array.ndim == 4 else "image2d"


def strip_suffix(relpath: str) -> str:
    """File name without its (possibly double, e.g. .nii.gz) suffix, keeping folders."""
    lower = relpath.lower()
    for suffix in sorted(RASTER_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return relpath[: -len(suffix)]
    return relpath


def sniff_format(relpath: str, head: bytes) -> str | None:
    """The input family of a file from its suffix, or the DICOM magic for bare names.

    Args:
        relpath: path relative to the source root.
        head: the first bytes of the file (at least 132 for the DICOM magic check).

    Returns:
        "raster", "dicom", "nifti", or None when the file is of no supported family.
    """
    lower = relpath.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if lower.endswith(RASTER_SUFFIXES):
        return "raster"
    if lower.endswith(DICOM_SUFFIXES):
        return "dicom"
    if head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == _DICOM_MAGIC:
        return "dicom"
    return None


def check_values(array: np.ndarray, what: str) -> None:
    """Reject empty arrays and arrays with NaN or infinite values."""
    if array.size == 0 or 0 in array.shape:
        raise ReadError("empty", f"{what} has no pixels (shape {array.shape})")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ReadError("non_finite", f"{what} has {bad} NaN or infinite values")


def _check_pixels(n_pixels: int, max_pixels: int, what: str) -> None:
    if n_pixels > max_pixels:
        raise ReadError(
            "too_large",
            f"{what} has {n_pixels} pixels, more than ingestion.max_pixels={max_pixels}",
        )


# ----------------------------------------------------------------------------- raster


def decode_raster(data: bytes, *, max_pixels: int) -> Decoded:
    """Decode a PNG, JPEG or TIFF (8/16-bit grey, 8-bit colour) to ``(C, H, W)`` float32.

    Alpha channels are dropped (synthmed has no use for transparency); palette images are
    expanded to RGB, or to grey when the palette is grey. The EXIF orientation tag is applied
    (as viewers do: a camera's portrait photo stays upright; the re-encoded copy has no EXIF to
    turn it back). Multi-page TIFFs and colour with 16 bits per channel (which Pillow cuts to 8)
    are rejected. Pillow's decompression-bomb guard stays on; ``max_pixels`` is checked before decoding.
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        _check_pixels(width * height, max_pixels, "image")
        if getattr(image, "n_frames", 1) > 1:
            raise ReadError("unsupported_shape", f"multi-page image with {image.n_frames} pages")
        _check_colour_depth(image)
        image.load()
        image = ImageOps.exif_transpose(image)
    except ReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ReadError("unreadable", f"{type(exc).__name__}: {exc}") from exc
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA"):
        image = image.convert("L")
    elif mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode == "1":
        image = image.convert("L")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if (array.ndim == 3 and np.array_equal(array[..., 0], array[..., 1])
            and np.array_equal(array[..., 1], array[..., 2])):
        array = array[..., 0]
    source_dtype = str(array.dtype)
    chw = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    out = np.ascontiguousarray(chw, dtype=np.float32)
    check_values(out, "image")
    return Decoded(out, (math.nan, math.nan), source_dtype)


def _check_colour_depth(image: Image.Image) -> None:
    """Refuse colour stored with 16 bits per channel: Pillow decodes it to 8 bits per channel."""
    for tile in image.tile:
        args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
        rawmode = args[0] if args and isinstance(args[0], str) else ""
        if image.mode in ("RGB", "RGBA") and ";16" in rawmode:
            raise ReadError(
                "unsupported",
                f"colour with 16 bits per channel (stored as {rawmode}): decoding would cut it to 8 bits per "
                f"channel; export it as 8-bit RGB, or as 16-bit grey if it is a grey image")


def decode_raster_mask(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode a label image to ``(1, H, W)`` uint8 (grey values are labels; 255 -> 1 for binary masks)."""
    decoded = decode_raster(data, max_pixels=max_pixels)
    if decoded.array.shape[0] != 1:
        raise ReadError("mask_invalid", f"mask must be single-channel, got {decoded.array.shape[0]} channels")
    return to_label_mask(decoded.array, "mask")


def to_label_mask(array: np.ndarray, what: str) -> np.ndarray:
    """Integer-valued array -> uint8 labels. A binary 0/255 mask becomes 0/1."""
    values = np.unique(array)
    if not np.array_equal(values, np.round(values)) or values.min() < 0 or values.max() > 255:
        raise ReadError(
            "mask_invalid",
            f"{what} must hold integer labels in [0, 255], got values from {values.min()} to {values.max()}",
        )
    if set(values.tolist()) <= {0.0, 255.0}:
        array = array / 255.0
    return np.ascontiguousarray(array, dtype=np.uint8)


# ----------------------------------------------------------------------------- NIfTI


def load_nifti_image(data: bytes, *, max_pixels: int) -> nib.Nifti1Image:
    """Parse NIfTI-1/2 bytes (gzipped or not) into a nibabel image, checking size first."""
    try:
        if data[:2] == b"\x1f\x8b":
            # Read at most a little more than the allowed size: a gzip bomb stops here.
            limit = max_pixels * 8 + (1 << 20)
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = decompressor.decompress(data, limit)
            if decompressor.unconsumed_tail:
                raise ReadError("too_large", f"decompressed NIfTI exceeds {limit} bytes")
        else:
            raw = data
        # sizeof_hdr: 348 for NIfTI-1, 540 for NIfTI-2, in the file's byte order (either).
        nifti2 = 540 in (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big"))
        image_class = nib.Nifti2Image if nifti2 else nib.Nifti1Image
        image = image_class.from_bytes(raw)
    except ReadError:
        raise
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError,
            nib.wrapstruct.WrapStructError, gzip.BadGzipFile, zlib.error, ValueError, EOFError,
            OSError) as exc:
        # HeaderDataError (bad header codes) and WrapStructError (short header) are not
        # ValueErrors: without them, garbage bytes escaped as a crash instead of a ReadError.
        raise ReadError("unreadable", f"{type(exc).__name__}: {exc}") from exc
    _check_pixels(int(np.prod(image.shape)), max_pixels, "volume")
    return image


def decode_nifti(data: bytes, *, max_pixels: int) -> Decoded:
    """Decode a 3D NIfTI volume to ``(1, X, Y, Z)`` float32, closest-canonical RAS+.

    A 4D image with a single volume is squeezed; time series and 2D images are rejected, and so
    are complex and RGB voxels (``unsupported``: synthmed reads one real intensity per voxel).
    """
    image = load_nifti_image(data, max_pixels=max_pixels)
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        image = image.slicer[..., 0]
    if len(image.shape) != 3:
        raise ReadError("unsupported_shape", f"expected a 3D volume, got shape {shape}")
    dtype = image.get_data_dtype()
    if dtype.kind == "c" or dtype.names:
        what = "complex" if dtype.kind == "c" else "RGB"
        raise ReadError("unsupported", f"{what} voxels ({dtype}): synthmed reads one real intensity per voxel; "
                                       f"save the magnitude (complex) or one channel (RGB) as a real-valued volume")
    source_dtype = str(dtype)
    try:
        # A volume not stored in RAS+ order is read here, so a truncated one fails here.
        canonical = nib.as_closest_canonical(image)
        array = canonical.get_fdata(dtype=np.float32)
    except (ValueError, EOFError, OSError, zlib.error) as exc:
        raise ReadError("truncated", f"{type(exc).__name__}: {exc}") from exc
    check_values(array, "volume")
    spacing = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    return Decoded(np.ascontiguousarray(array[None]), spacing, source_dtype)


def decode_nifti_mask(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode a label volume to ``(1, X, Y, Z)`` uint8 in the same canonical order."""
    return to_label_mask(decode_nifti(data, max_pixels=max_pixels).array, "mask volume")


# ----------------------------------------------------------------------------- DICOM


def read_dicom(data: bytes, *, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """Parse DICOM bytes; ``ReadError('unreadable')`` for anything pydicom cannot parse.

    Any exception from pydicom becomes a ``ReadError``: a malformed file must never stop a run.
    """
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed input
        raise ReadError("unreadable", f"{type(exc).__name__}: {exc}") from exc


# The pinned packages (pyproject.toml) that give pydicom 3 a decoder for each compressed
# transfer syntax; named in the error when no decoder is installed for a file.
_JPEG_PACKAGES = "pylibjpeg==2.1.0 pylibjpeg-libjpeg==2.5.0"
_DECODER_PACKAGES = {
    pydicom.uid.JPEGBaseline8Bit: _JPEG_PACKAGES,
    pydicom.uid.JPEGExtended12Bit: _JPEG_PACKAGES,
    pydicom.uid.JPEGLossless: _JPEG_PACKAGES,
    pydicom.uid.JPEGLosslessSV1: _JPEG_PACKAGES,
    pydicom.uid.JPEGLSLossless: "pyjpegls==1.5.1 (or " + _JPEG_PACKAGES + ")",
    pydicom.uid.JPEGLSNearLossless: "pyjpegls==1.5.1 (or " + _JPEG_PACKAGES + ")",
    pydicom.uid.JPEG2000Lossless: "pylibjpeg==2.1.0 pylibjpeg-openjpeg==2.6.0",
    pydicom.uid.JPEG2000: "pylibjpeg==2.1.0 pylibjpeg-openjpeg==2.6.0",
    pydicom.uid.RLELossless: "pylibjpeg==2.1.0 pylibjpeg-rle==2.2.0",
}


def _missing_decoder(syntax: pydicom.uid.UID) -> ReadError:
    packages = _DECODER_PACKAGES.get(syntax)
    fix = (f"install {packages} (pinned in pyproject.toml: pip install -e .)" if packages
           else "no decoder for it is known to synthmed; convert the file to an uncompressed transfer syntax")
    return ReadError("unsupported", f"transfer syntax {syntax} ({syntax.name}) needs a decoder that is not "
                                    f"installed: {fix}")


def _decode_pixel_data(ds: pydicom.Dataset) -> tuple[np.ndarray, str]:
    """Decoded pixel data and the photometric interpretation of the returned array.

    Colour is converted to RGB by the decoder (``as_rgb``), which also knows when the codec
    already did it: JPEG 2000 YBR_ICT / YBR_RCT come out of the codec as RGB, and a second
    conversion (pydicom's ``convert_color_space`` does not know these) would fail.
    """
    syntax = getattr(ds, "file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
    if syntax is None:
        # No file meta: pydicom guesses the syntax from the dataset; its default also converts to RGB.
        raw = ds.pixel_array
        return raw, "RGB" if int(ds.get("SamplesPerPixel", 1)) == 3 else str(ds.get("PhotometricInterpretation"))
    syntax = pydicom.uid.UID(str(syntax))
    try:
        decoder = pydicom.pixels.get_decoder(syntax)
    except NotImplementedError as exc:
        raise _missing_decoder(syntax) from exc
    # pydicom 3 raises RuntimeError (not NotImplementedError) when every decoder plugin for
    # a compressed transfer syntax is missing, so check for an installed decoder first.
    if not decoder.is_available:
        raise _missing_decoder(syntax)
    array, meta = decoder.as_array(ds, as_rgb=True)
    return array, str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", "")))


def dicom_pixels(ds: pydicom.Dataset, *, max_pixels: int) -> np.ndarray:
    """Pixel data after the modality LUT (rescale slope/intercept), as float32.

    Returns ``(frames, H, W)`` for grey images and ``(3, H, W)`` for single-frame colour.
    MONOCHROME1 (minimum = white, PS3.3 C.7.6.3.1.2) is inverted so that larger values are
    brighter for every image. Colour (RGB, YBR_FULL(_422), JPEG 2000 YBR_ICT/YBR_RCT) is
    returned as RGB; PALETTE COLOR (indices into a colour table, PS3.3 C.7.6.3.1.5) through
    its table, as RGB in the table's range. Float Pixel Data is ``unsupported``. A compressed
    transfer syntax without an installed decoder is
    ``unsupported`` (the message names the package to install); short pixel data is
    ``truncated``; any other exception of the codec is ``decode_failed`` with its class and text.
    """
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_pixels(rows * cols * frames, max_pixels, "DICOM pixel data")
    if "PixelData" not in ds:
        floats = [name for name in ("FloatPixelData", "DoubleFloatPixelData") if name in ds]
        if floats:
            raise ReadError("unsupported", f"{floats[0]} instead of Pixel Data (7FE0,0010): a parametric map "
                                           f"of real values; synthmed reads stored integer pixels")
        raise ReadError("empty", "no Pixel Data (7FE0,0010) element")
    try:
        raw, decoded_photometric = _decode_pixel_data(ds)
    except ReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every codec failure of one file is that file's rejection
        text = str(exc)
        reason = "truncated" if "less than expected" in text or "truncat" in text else "decode_failed"
        syntax = getattr(ds, "file_meta", pydicom.Dataset()).get("TransferSyntaxUID", "unknown")
        raise ReadError(reason, f"transfer syntax {syntax}: {type(exc).__name__}: {text}") from exc
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples == 1 and photometric == "PALETTE COLOR":
        if frames > 1:
            raise ReadError("unsupported_shape", "multi-frame colour DICOM is not supported")
        try:
            rgb = pydicom.pixels.apply_color_lut(raw, ds)  # (H, W, 3)
        except (ValueError, KeyError, AttributeError, IndexError) as exc:
            raise ReadError("decode_failed", f"PALETTE COLOR without a usable colour table: "
                                             f"{type(exc).__name__}: {exc}") from exc
        return np.ascontiguousarray(np.moveaxis(rgb, -1, 0), dtype=np.float32)
    if samples == 3:
        if frames > 1:
            raise ReadError("unsupported_shape", "multi-frame colour DICOM is not supported")
        if decoded_photometric != "RGB":
            raise ReadError("unsupported", f"colour DICOM with photometric interpretation {photometric} "
                                           f"decoded as {decoded_photometric}, not RGB")
        return np.ascontiguousarray(np.moveaxis(raw, -1, 0), dtype=np.float32)
    rescale = frame_rescale(ds)
    if rescale is not None:
        # Enhanced images: the modality LUT is per frame, in the functional groups.
        frames_raw = raw.reshape(frames, rows, cols).astype(np.float32)
        pixels = np.stack([frame * slope + intercept for frame, (slope, intercept) in zip(frames_raw, rescale)])
    else:
        pixels = pydicom.pixels.apply_modality_lut(raw, ds).astype(np.float32)
    if photometric == "MONOCHROME1":
        # Invert within the range the header allows (not the image's own min/max), so that
        # every instance of a series is inverted the same way.
        low, high = _stored_range(ds)
        pixels = low + high - pixels
    pixels = pixels.reshape(frames, rows, cols)
    check_values(pixels, "DICOM pixel data")
    return pixels


def _stored_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """Lowest and highest value after the modality LUT that Bits Stored allows (PS3.3 C.7.6.3)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def _direction_cosines(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    orientation = ds.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return None
    values = np.asarray([float(v) for v in orientation])
    return values[:3], values[3:]


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float]:
    # PS3.3 C.7.6.2.1.1: PixelSpacing is (row spacing, column spacing) in mm.
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is None or len(spacing) != 2:
        return (math.nan, math.nan)
    return (float(spacing[0]), float(spacing[1]))


def _canonical_volume(
    stack: np.ndarray, cosines: tuple[np.ndarray, np.ndarray] | None, pixel_spacing: tuple[float, float],
    slice_mm: float, origin: np.ndarray,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Reorder a (K, rows, cols) stack into closest-canonical RAS+ ``(1, X, Y, Z)``.

    Args:
        cosines: row and column direction cosines (ImageOrientationPatient), None if unknown.
        pixel_spacing: ``(row_mm, col_mm)``; nan when unknown.
        slice_mm: distance between frames along the normal; nan when unknown.
        origin: position of the first voxel of the first frame (patient LPS, mm).
    """
    row_mm, col_mm = pixel_spacing
    row_cos, col_cos = cosines if cosines else (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    normal = np.cross(row_cos, col_cos)
    # Voxel (j=column, i=row, k=slice) -> patient LPS (PS3.3 C.7.6.2.1.1, equation C.7.6.2.1-1).
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cos * (col_mm if math.isfinite(col_mm) else 1.0)
    affine_lps[:3, 1] = col_cos * (row_mm if math.isfinite(row_mm) else 1.0)
    affine_lps[:3, 2] = normal * (slice_mm if math.isfinite(slice_mm) else 1.0)
    affine_lps[:3, 3] = origin
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    data = np.transpose(stack, (2, 1, 0))  # (cols, rows, K) = (j, i, k)
    ornt = nib.orientations.io_orientation(affine_ras)
    data = nib.orientations.apply_orientation(data, ornt)
    spacing_jik = np.array([col_mm, row_mm, slice_mm])
    spacing = tuple(float(spacing_jik[int(axis)]) for axis in np.argsort(ornt[:, 0]))
    return np.ascontiguousarray(data[None], dtype=np.float32), spacing


def _slice_order(positions: Sequence[np.ndarray], normal: np.ndarray, what: str) -> tuple[np.ndarray, float]:
    """Order of slices (or frames) along ``normal`` and their step; they must be evenly spaced.

    Raises:
        ReadError: ``inconsistent_series`` when two share a position or a gap remains.
    """
    order = np.argsort([float(p @ normal) for p in positions], kind="stable")
    distances = np.diff([float(positions[i] @ normal) for i in order])
    if np.any(np.isclose(distances, 0.0)):
        raise ReadError("inconsistent_series", f"two {what} share one slice position")
    step = float(np.median(distances))
    if np.any(np.abs(distances - step) > 0.1 * abs(step)):
        raise ReadError(
            "inconsistent_series",
            f"uneven {what} spacing (from {distances.min():.3f} to {distances.max():.3f} mm): missing slice?",
        )
    return order, step


def _enhanced_volume(pixels: np.ndarray, geometry: FrameGeometry, source_dtype: str,
                     modality: str | None) -> Decoded:
    """An enhanced multi-frame image as a volume: frames sorted along the normal, spacing checked."""
    cosines = (geometry.row_cosine, geometry.column_cosine)
    normal = np.cross(*cosines)
    positions = list(geometry.positions)
    order, step = _slice_order(positions, normal, "frames")
    array, spacing = _canonical_volume(pixels[order], cosines, geometry.pixel_spacing, step, positions[order[0]])
    return Decoded(array, spacing, source_dtype, modality)


def decode_dicom_series(datasets: Sequence[pydicom.Dataset], *, max_pixels: int,
                        pixels: Sequence[np.ndarray] | None = None) -> Decoded:
    """One item from the datasets of one series (each with pixel data, or see ``pixels``).

    ``pixels``: each dataset's `dicom_pixels`, already decoded (in the same order); the
    datasets then need only their header (ingestion decodes each file once, in a worker).

    - one single-frame grey or colour instance -> 2D ``(C, H, W)``;
    - one enhanced multi-frame instance (per-frame functional groups with positions) ->
      volume, frames sorted along the slice normal and checked for even spacing like a series;
    - one other multi-frame instance -> volume, frames in stored order along the normal, unless its
      Frame Increment Pointer says the frames are time points (a cine: ``unsupported_shape``);
    - several single-frame instances -> volume sorted by position along the normal, which
      must be evenly spaced (a missing slice is rejected as ``inconsistent_series``).
    """
    if not datasets:
        raise ReadError("empty", "series without instances")
    first = datasets[0]
    modality = str(first.get("Modality", "")) or None
    source_dtype = f"{'int' if int(first.get('PixelRepresentation', 0)) else 'uint'}{first.get('BitsAllocated', '')}"
    decoded = (lambda i: pixels[i]) if pixels is not None else (
        lambda i: dicom_pixels(datasets[i], max_pixels=max_pixels))
    if len(datasets) == 1:
        frames = decoded(0)
        geometry = frame_geometry(first) if int(first.get("SamplesPerPixel", 1)) == 1 else None
        if geometry is not None and len(geometry.positions) == frames.shape[0] > 1:
            return _enhanced_volume(frames, geometry, source_dtype, modality)
        if frames.shape[0] in (1, 3) and int(first.get("NumberOfFrames", 1) or 1) == 1:
            spacing = geometry.pixel_spacing if geometry is not None else _pixel_spacing(first)
            return Decoded(frames, spacing, source_dtype, modality)
        _refuse_time_frames(first)
        thickness = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", math.nan)) or math.nan)
        origin = np.asarray([float(v) for v in first.get("ImagePositionPatient", [0, 0, 0])])
        array, spacing = _canonical_volume(frames, _direction_cosines(first), _pixel_spacing(first), thickness,
                                           origin)
        return Decoded(array, spacing, source_dtype, modality)

    order, cosines, step, origin = _series_plan(datasets)
    stack = np.concatenate([decoded(i) for i in order])
    if stack.shape[0] != len(datasets):
        raise ReadError("unsupported_shape", "a series mixing multi-frame or colour instances")
    array, spacing = _canonical_volume(stack, cosines, _pixel_spacing(first), step, origin)
    return Decoded(array, spacing, source_dtype, modality)


# Frame Increment Pointer targets (PS3.3 C.7.6.6.1.1) under which the frames of a multi-frame
# instance are moments in time, not slices: Frame Time, Frame Time Vector, R-R Interval Vector,
# Time Slot Vector, Time Slice Vector.
_TIME_POINTERS = {0x00181063: "FrameTime", 0x00181065: "FrameTimeVector", 0x00540060: "RRIntervalVector",
                  0x00540070: "TimeSlotVector", 0x00540100: "TimeSliceVector"}


def _refuse_time_frames(ds: pydicom.Dataset) -> None:
    pointers = ds.get("FrameIncrementPointer")
    if pointers is None:
        return
    pointers = [pointers] if isinstance(pointers, int) else list(pointers)
    times = [_TIME_POINTERS[int(tag)] for tag in pointers if int(tag) in _TIME_POINTERS]
    if times:
        raise ReadError("unsupported_shape",
                        f"multi-frame instance whose frames are time points (Frame Increment Pointer: {times[0]}): "
                        f"a cine or dynamic acquisition, not a volume; export one frame per file to use its frames "
                        f"as 2D images")


def _series_plan(
    datasets: Sequence[pydicom.Dataset],
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], float, np.ndarray]:
    """How the instances of a series stack: ``(order, cosines, step_mm, origin)``.

    Raises:
        ReadError: ``inconsistent_series`` for different sizes, no position/orientation,
            shared positions or uneven spacing.
    """
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shapes) != 1:
        raise ReadError("inconsistent_series", f"instances have different sizes {sorted(shapes)}")
    cosines = _direction_cosines(datasets[0])
    if cosines is None or any("ImagePositionPatient" not in ds for ds in datasets):
        raise ReadError("inconsistent_series",
                        "several instances but no ImagePositionPatient/ImageOrientationPatient to order them")
    _check_shared_geometry(datasets, cosines)
    normal = np.cross(*cosines)
    positions = [np.asarray([float(v) for v in ds.ImagePositionPatient]) for ds in datasets]
    order, step = _slice_order(positions, normal, "instances")
    return order, cosines, step, positions[order[0]]


def _check_shared_geometry(datasets: Sequence[pydicom.Dataset], cosines: tuple[np.ndarray, np.ndarray]) -> None:
    """Every instance in the first one's orientation and pixel spacing, else ``inconsistent_series``.

    A localizer's three planes, or a slice re-acquired at another resolution, share a series UID
    but do not stack into one volume.
    """
    def shown(values: Sequence[float]) -> list[float]:
        return [round(float(v), 4) + 0.0 for v in values]  # + 0.0: no -0.0 in the message

    def instance(ds: pydicom.Dataset) -> str:
        number = ds.get("InstanceNumber")  # no UIDs in messages: they identify the study
        return f"InstanceNumber {number}" if number is not None else "an instance without InstanceNumber"

    first = np.concatenate(cosines)
    spacing = np.asarray(_pixel_spacing(datasets[0]))
    for ds in datasets[1:]:
        other = _direction_cosines(ds)
        if other is None or not np.allclose(np.concatenate(other), first, atol=1e-4):
            seen = "none" if other is None else shown(np.concatenate(other))
            raise ReadError("inconsistent_series",
                            f"instances in different orientations: ImageOrientationPatient {shown(first)} in "
                            f"{instance(datasets[0])}, {seen} in {instance(ds)}; a localizer or a mixed-plane "
                            f"series is not one volume")
        own = np.asarray(_pixel_spacing(ds))
        if not np.allclose(own, spacing, rtol=1e-3, equal_nan=True):
            raise ReadError("inconsistent_series",
                            f"instances with different PixelSpacing: {shown(spacing)} mm in {instance(datasets[0])}, "
                            f"{shown(own)} mm in {instance(ds)}; they do not stack into one volume")


def arrange_series_labels(datasets: Sequence[pydicom.Dataset], labels: np.ndarray) -> np.ndarray:
    """Labels of each instance, ``(K, rows, cols)`` in ``datasets`` order, laid out like the decoded item.

    Returns ``(1, H, W)`` for one single-frame instance and ``(1, X, Y, Z)`` for a series:
    the same order and orientation as `decode_dicom_series`, so mask and image voxels match.
    """
    if len(datasets) == 1:
        if int(datasets[0].get("NumberOfFrames", 1) or 1) != 1:
            raise ReadError("mask_unsupported", "a mask of a multi-frame image is not supported")
        return np.ascontiguousarray(labels[:1], dtype=np.uint8)
    order, cosines, step, origin = _series_plan(datasets)
    array, _ = _canonical_volume(labels[order].astype(np.float32), cosines, _pixel_spacing(datasets[0]), step,
                                 origin)
    return np.ascontiguousarray(array, dtype=np.uint8)
