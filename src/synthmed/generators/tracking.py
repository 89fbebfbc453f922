"""Sends training metrics, sample grids and resolved settings to the active MLflow run (opened by kedro-mlflow)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import nn

from synthmed.core.atomic import disk_full_reported, uri_path
from synthmed.generators.common import evaluating


class MlflowTracker:
    """``Tracker`` for ``synthmed.generators.training.train`` that logs to MLflow.

    Args:
        prefix: metric name prefix, e.g. ``"ddpm"`` -> ``ddpm.loss``.
        grid: draws a sample grid from the current models (or None: no grids).
    """

    def __init__(self, prefix: str, grid: Callable[[nn.ModuleDict], Figure] | None = None):
        self._prefix = prefix
        self._grid = grid

    def log_params(self, params: Mapping[str, str]) -> None:
        """The run's resolved settings as ``<prefix>.resolved.<name>`` parameters."""
        import mlflow

        with disk_full_reported(uri_path(mlflow.get_tracking_uri())):
            mlflow.log_params({f"{self._prefix}.resolved.{k}": str(v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import mlflow

        with disk_full_reported(uri_path(mlflow.get_tracking_uri())):
            mlflow.log_metrics({f"{self._prefix}.{k}": float(v) for k, v in metrics.items()}, step=step)

    def log_samples(self, models: nn.ModuleDict, step: int) -> None:
        import mlflow

        if self._grid is None:
            return
        with evaluating(models):
            figure = self._grid(models)
        with disk_full_reported(uri_path(mlflow.get_artifact_uri())):
            mlflow.log_figure(figure, f"{self._prefix}/samples/step_{step:07d}.png")
        plt.close(figure)


def active_tracker(prefix: str, grid: Callable[[nn.ModuleDict], Figure] | None = None) -> MlflowTracker | None:
    """A tracker when an MLflow run is active (``kedro run`` with kedro-mlflow), else None."""
    import mlflow

    return MlflowTracker(prefix, grid) if mlflow.active_run() is not None else None
