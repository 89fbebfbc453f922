"""Text burned into pixels (PS3.15 E.3.1, Clean Pixel Data Option): find it, redact it.

The OCR engine is RapidOCR (``rapidocr-onnxruntime``, Apache-2.0): PaddleOCR's PP-OCRv4
detection and recognition networks converted to ONNX and run with ONNX Runtime on the CPU.
Its wheel ships the three model files (``rapidocr_onnxruntime/models/*.onnx``, 16 MB), so
nothing is downloaded at run time and it works with no network. Tesseract-based tools
(Presidio's image redactor, pytesseract) need a system binary that pip cannot install;
EasyOCR downloads its weights on first use.

A box counts as text when the recogniser reads at least one non-blank character in it
with a confidence of at least ``min_confidence``; detector boxes the recogniser cannot
read are ignored, which keeps vessels and edges from being taken for text.

The recognised strings are never logged or returned in tables (they may be a name): callers
get boxes, scores and counts. ``TextBox.text`` exists for tests and is left out of its repr.

Limits: the recogniser knows Latin and Chinese characters; text smaller than about 8
pixels high, rotated by more than about 45 degrees, or of very low contrast may be missed.
A negative result lowers the risk, it does not prove the absence of text: items of the
classes that routinely carry text stay quarantined unless a person reviewed them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextBox:
    """One region of text: pixel bounds ``[row0, row1) x [col0, col1)`` and the recogniser's score."""

    row0: int
    row1: int
    col0: int
    col1: int
    confidence: float
    text: str = field(default="", repr=False, compare=False)

    def as_text(self) -> str:
        """``"row0:row1,col0:col1"``, the form stored in tables (coordinates only)."""
        return f"{self.row0}:{self.row1},{self.col0}:{self.col1}"


def parse_boxes(text: str) -> list[tuple[int, int, int, int]]:
    """``"r0:r1,c0:c1;..."`` (see `TextBox.as_text`) -> ``[(r0, r1, c0, c1), ...]``."""
    boxes = []
    for part in filter(None, str(text).split(";")):
        try:
            rows, cols = part.split(",")
            r0, r1 = (int(v) for v in rows.split(":"))
            c0, c1 = (int(v) for v in cols.split(":"))
        except ValueError as exc:
            raise ValueError(f"Expected boxes as 'row0:row1,col0:col1;...', got {part!r} in {text!r}.") from exc
        boxes.append((r0, r1, c0, c1))
    return boxes


@functools.cache
def _engine():
    """One RapidOCR engine per process (loading the three networks takes about 0.4 s)."""
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def to_uint8_rgb(pixels: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` values of any type -> ``(H, W, 3)`` uint8, min-max scaled.

    Min-max scaling keeps burned-in text, usually drawn at the brightest (or darkest) value
    of the stored range, at full contrast whatever the bit depth.
    """
    array = np.asarray(pixels, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"Expected a 2D image (H, W) or (H, W, 3), got an array of shape {np.shape(pixels)}.")
    finite = np.isfinite(array)
    if not finite.any():
        return np.zeros(array.shape, dtype=np.uint8)
    low, high = float(array[finite].min()), float(array[finite].max())
    scaled = (np.where(finite, array, low) - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def find_text(pixels: np.ndarray, *, min_confidence: float = 0.5) -> list[TextBox]:
    """Regions of ``pixels`` (``(H, W)`` or ``(H, W, 3)``, any type) that hold readable text.

    Args:
        pixels: one 2D image (a frame or a slice); values are min-max scaled to 8 bits.
        min_confidence: the recogniser's score (0 to 1) from which a box counts as text.

    Returns:
        The boxes, sorted top to bottom; empty when no text was read.
    """
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}.")
    image = to_uint8_rgb(pixels)
    height, width = image.shape[:2]
    result, _ = _engine()(image)
    boxes = []
    for polygon, text, score in result or []:
        if not str(text).strip() or float(score) < float(min_confidence):
            continue
        points = np.asarray(polygon, dtype=np.float64)
        boxes.append(TextBox(
            row0=max(int(np.floor(points[:, 1].min())), 0),
            row1=min(int(np.ceil(points[:, 1].max())) + 1, height),
            col0=max(int(np.floor(points[:, 0].min())), 0),
            col1=min(int(np.ceil(points[:, 0].max())) + 1, width),
            confidence=float(score),
            text=str(text),
        ))
    boxes.sort(key=lambda b: (b.row0, b.col0))
    logger.debug("Text search: %d box(es) in a %dx%d image", len(boxes), height, width)
    return boxes


def redact(pixels: np.ndarray, boxes: list[tuple[int, int, int, int]], *, pad_px: int = 2,
           channel_axis: int | None = None) -> np.ndarray:
    """A copy of ``pixels`` with each box (grown by ``pad_px``) filled with the image minimum.

    The minimum of each channel is the background of nearly every medical image (air,
    the black border of a photograph), so the filled box reads as background rather
    than as a bright patch that draws the eye.

    Args:
        pixels: ``(H, W)``, ``(H, W, C)`` (``channel_axis=-1``) or ``(C, H, W)``
            (``channel_axis=0``).
        boxes: ``(row0, row1, col0, col1)`` in the image's pixel grid.
    """
    out = np.array(pixels, copy=True)
    if channel_axis is None:
        planes = out[None]
    elif channel_axis == 0:
        planes = out
    else:
        planes = np.moveaxis(out, channel_axis, 0)  # a view: writes reach ``out``
    height, width = planes.shape[1:3]
    for r0, r1, c0, c1 in boxes:
        rows = slice(max(r0 - pad_px, 0), min(r1 + pad_px, height))
        cols = slice(max(c0 - pad_px, 0), min(c1 + pad_px, width))
        for plane in planes:
            plane[rows, cols] = np.nanmin(plane)
    return out
