"""A matplotlib figure saved as an image file (PNG by default), without importing matplotlib.

kedro-datasets' ``matplotlib.MatplotlibDataset`` imports ``matplotlib.pyplot`` when its module
loads, and kedro-mlflow's ``after_catalog_created`` hook builds every catalog entry before the
first node of any run: with it, each ``kedro run`` paid pyplot's import (about 0.9 CPU-s) whether
or not a figure was drawn. This dataset needs only the figure it is given: ``Figure.savefig``
renders with the figure's own canvas (Agg), so matplotlib loads where a node draws.

Saved atomically (a complete file or the previous one), like every synthmed output.
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import ImagePreview

from synthmed.core.atomic import atomic_write_bytes

FORMATS = ("png", "jpg", "jpeg", "svg", "pdf")


class FigureDataset(AbstractDataset[Any, None]):
    """Write a ``matplotlib.figure.Figure`` to ``filepath`` (write-only, like ``MatplotlibDataset``).

    Args:
        filepath: the image file; its suffix must match ``save_args.format`` when given.
        save_args: keyword arguments of ``Figure.savefig`` (``format``, ``dpi``, ``bbox_inches``...).
        metadata: free-form metadata (kedro-viz layers, synthmed's MLflow switches).
    """

    def __init__(self, *, filepath: str, save_args: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self._save_args = dict(save_args or {})
        suffix = self._filepath.suffix.lower().lstrip(".")
        fmt = str(self._save_args.setdefault("format", suffix or "png")).lower()
        if fmt not in FORMATS:
            raise DatasetError(f"FigureDataset {filepath}: save_args.format {fmt!r} is not one of {list(FORMATS)}.")
        if suffix and suffix != fmt and {suffix, fmt} != {"jpg", "jpeg"}:
            raise DatasetError(f"FigureDataset {filepath}: the file's suffix .{suffix} does not match "
                               f"save_args.format {fmt!r}; make them agree.")
        self.metadata = metadata

    def load(self) -> None:
        raise DatasetError(f"FigureDataset {self._filepath} is write-only: a saved figure is an image file, "
                           "not a figure to draw on (open the file, or read it with PIL).")

    def save(self, data: Any) -> None:
        if not callable(getattr(data, "savefig", None)):
            raise DatasetError(f"FigureDataset {self._filepath}: expected a matplotlib Figure, got "
                               f"{type(data).__name__}.")
        buffer = io.BytesIO()
        data.savefig(buffer, **self._save_args)
        atomic_write_bytes(self._filepath, buffer.getvalue())
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:  # a figure made with pyplot stays open until closed (a no-op for others)
            pyplot.close(data)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def preview(self) -> ImagePreview:
        """kedro-viz: the saved image, base64-encoded."""
        return ImagePreview(base64.b64encode(self._filepath.read_bytes()).decode("ascii"))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "save_args": self._save_args}
