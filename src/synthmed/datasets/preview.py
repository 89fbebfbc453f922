"""What kedro-viz shows in its preview panel for synthmed's datasets.

kedro-viz calls a dataset's ``preview()`` and picks the panel from the name of its return
annotation (kedro-datasets' ``ImagePreview``: a base64 PNG; ``TablePreview``: a table in
pandas' ``split`` orientation; ``JSONPreview``: a JSON string). Previews read little: the
first images of a store, the first rows of a table, a model's description file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from kedro_datasets._typing import ImagePreview, JSONPreview, TablePreview

TILE_PX = 64
COLUMNS = 4


def _plane(array: np.ndarray) -> np.ndarray | None:
    """One 2D picture (H, W) or (H, W, 3) of an array: an image, its first item, a volume's middle slice."""
    a = np.asarray(array)
    while a.ndim > 3 or (a.ndim == 3 and a.shape[0] == 1):  # (N, C, H, W), (1, H, W): the first item
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 3:
        a = np.moveaxis(a, 0, -1)  # (3, H, W) -> (H, W, 3)
    elif a.ndim == 3 and a.shape[-1] not in (3,):
        a = a[a.shape[0] // 2]  # a volume: its middle slice
    return a if a.ndim in (2, 3) and min(a.shape[:2]) > 1 else None


def _tile(plane: np.ndarray) -> np.ndarray:
    """Scaled to 0..255 over its own range, resized to TILE_PX, as RGB uint8."""
    from PIL import Image

    values = np.nan_to_num(plane.astype(np.float64))
    low, high = float(values.min()), float(values.max())
    unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
    pixels = np.rint(unit * 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert("RGB").resize((TILE_PX, TILE_PX), Image.Resampling.NEAREST)
    return np.asarray(image)


def image_grid(arrays: Iterable[np.ndarray], max_images: int = 16) -> ImagePreview:
    """A grid of up to ``max_images`` pictures (each scaled over its own range) as a base64 PNG."""
    from synthmed.datasets.file_folder import encode_png

    tiles = []
    for array in arrays:
        plane = _plane(array)
        if plane is not None:
            tiles.append(_tile(plane))
        if len(tiles) >= max_images:
            break
    if not tiles:
        raise ValueError("nothing to preview: no array holds a 2D image")
    rows = -(-len(tiles) // COLUMNS)
    columns = min(COLUMNS, len(tiles))
    grid = np.full((rows * (TILE_PX + 2), columns * (TILE_PX + 2), 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, COLUMNS)
        grid[r * (TILE_PX + 2):r * (TILE_PX + 2) + TILE_PX, c * (TILE_PX + 2):c * (TILE_PX + 2) + TILE_PX] = tile
    return ImagePreview(base64.b64encode(encode_png(grid)).decode("ascii"))


def store_images(store: Mapping[str, np.ndarray], max_images: int) -> Iterable[np.ndarray]:
    """A store's pictures: the items of its ``images`` array if it has one, else its arrays in order."""
    if "images" in store:
        images = store["images"]
        return (images[k] for k in range(min(len(images), max_images)))
    return (store[name] for name in store)


def table(frame: Any, nrows: int) -> TablePreview:
    """The first ``nrows`` rows of a pandas DataFrame, as kedro-viz's table preview."""
    return TablePreview(json.loads(frame.head(nrows).to_json(orient="split")))


def json_file(path: Path) -> JSONPreview:
    """A JSON file as it is (a model's description)."""
    return JSONPreview(json.dumps(json.loads(path.read_text()), indent=2, sort_keys=True))
