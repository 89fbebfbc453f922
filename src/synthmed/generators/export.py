"""Exporting generated images: PNG files (16-bit for grey images) and a dataset card."""

from __future__ import annotations

import numpy as np


def to_png_pixels(image: np.ndarray, bits: int = 16) -> np.ndarray:
    """``(C, H, W)`` float in [-1, 1] -> PNG pixels, [-1, 1] mapped linearly onto the full range.

    Grey images become 16-bit ``(H, W)`` uint16 (0..65535), so that the export does not
    quantise what the model produced; RGB images become 8-bit ``(H, W, 3)`` uint8, because
    PNG writers here (Pillow) have no 16-bit RGB mode. ``bits=8`` gives 8-bit grey too: what
    loaders that convert to RGB (torchvision's default) read without clipping.
    """
    if bits not in (8, 16):
        raise ValueError(f"PNG pixels are 8 or 16 bits, got bits={bits}.")
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"Expected an image with shape (C, H, W), C in (1, 3), got {image.shape}.")
    unit = np.clip((np.asarray(image, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    if image.shape[0] == 1 and bits == 8:
        return np.rint(unit[0] * 255).astype(np.uint8)
    if image.shape[0] == 1:
        return np.rint(unit[0] * 65535).astype(np.uint16)
    return np.rint(np.moveaxis(unit, 0, -1) * 255).astype(np.uint8)
