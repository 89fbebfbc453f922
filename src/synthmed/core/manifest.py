"""How manifests (CSV tables shared by the pipelines) write shapes, spacings and path lists.

Shapes and spacings are written as ``x``-joined text (``"1x197x233x189"``,
``"0.5x0.5x2.5"``; unknown spacing is ``nan``) so the CSVs stay readable in kedro-viz and
a spreadsheet; every pipeline reads and writes them through these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from synthmed.core.lazy import lazy_import

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")

# The instance files of one DICOM series are joined with this in ``source_paths``.
PATH_SEPARATOR = ";"


def format_shape(shape: Sequence[int]) -> str:
    """``(1, 64, 64)`` -> ``"1x64x64"``."""
    return "x".join(str(int(s)) for s in shape)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x64x64"`` -> ``(1, 64, 64)``."""
    return tuple(int(s) for s in str(text).split("x"))


def spatial_shape(text: str) -> tuple[int, ...]:
    """The spatial part (channels dropped) of a shape text: ``"3x48x40"`` -> ``(48, 40)``."""
    return parse_shape(text)[1:]


def format_spacing(spacing: Sequence[float]) -> str:
    """``(0.5, 0.5, 2.5)`` -> ``"0.5x0.5x2.5"``, with ``nan`` for unknown spacing."""
    return "x".join("nan" if not math.isfinite(s) else f"{s:.6g}" for s in spacing)


def parse_spacing(text: str) -> tuple[float, ...]:
    """``"0.5x0.5x2.5"`` -> ``(0.5, 0.5, 2.5)``; ``nan`` stays NaN."""
    return tuple(float(s) for s in str(text).split("x"))


def class_names_of(manifest: pd.DataFrame) -> list[str]:
    """Class names by class id, from an extraction manifest (``class_id``, ``label``)."""
    table = manifest.drop_duplicates("class_id").sort_values("class_id")
    names = dict(zip(table["class_id"], table["label"]))
    return [names.get(i, str(i)) for i in range(int(table["class_id"].max()) + 1)] if len(table) else []
