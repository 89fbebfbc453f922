"""Flat metrics to a JSON file (DVC metrics) and, when a run is active, to MLflow.

One dataset writes both, so ``dvc metrics show`` and the MLflow UI show the same numbers.

No checksum is recorded for these files, by design: they are small metrics JSONs tracked by
git (``cache: false`` in dvc.yaml), so git already detects any change to them (``git status``,
``dvc metrics diff``), and a bad edit fails loudly in ``json.loads``; a recorded sha256 would
have to live in git beside them and change with every run, adding nothing.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from synthmed.core.atomic import atomic_write_bytes, disk_full_reported, uri_path
from synthmed.datasets.preview import JSONPreview

logger = logging.getLogger(__name__)


class MetricsDataset(AbstractDataset[dict[str, float], dict[str, float]]):
    """Save ``dict[str, int | float]`` as sorted JSON and log it to the active MLflow run.

    Args:
        path: the JSON file; declare it under ``metrics:`` in dvc.yaml.
        prefix: prepended to each metric name in MLflow (``ingestion.items_read``), so
            metrics of different pipelines do not collide in one run.
        metadata: free-form metadata (kedro-viz layers); ignored by the dataset.
    """

    def __init__(self, *, path: str, prefix: str = "", metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self._prefix = prefix
        self.metadata = metadata

    def load(self) -> dict[str, float]:
        return json.loads(self._path.read_text())

    def save(self, data: dict[str, float]) -> None:
        clean: dict[str, float] = {}
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DatasetError(
                    f"Metric {name!r} in {self._path} must be a finite number, got {value!r}."
                )
            clean[name] = value
        atomic_write_bytes(self._path, (json.dumps(clean, indent=2, sort_keys=True) + "\n").encode())
        self._log_to_mlflow(clean)

    def _log_to_mlflow(self, metrics: dict[str, float]) -> None:
        import mlflow

        if mlflow.active_run() is None:
            return
        with disk_full_reported(uri_path(mlflow.get_tracking_uri())):
            mlflow.log_metrics({f"{self._prefix}{name}": float(v) for name, v in metrics.items()})

    def _exists(self) -> bool:
        return self._path.is_file()

    def preview(self) -> JSONPreview:
        """kedro-viz: the metrics as saved."""
        return JSONPreview(json.dumps(self.load(), indent=2, sort_keys=True))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "prefix": self._prefix}
