"""Tests for synthmed.datasets.metrics: sorted JSON for DVC, and the same numbers to MLflow."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from kedro.io import DatasetError

from synthmed.datasets.metrics import MetricsDataset


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A throw-away SQLite tracking store; the global URI and any run are reset afterwards."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; monkeypatch restores its old value.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


def test_json_is_sorted_and_reloadable(tmp_path: Path) -> None:
    dataset = MetricsDataset(path=str(tmp_path / "metrics" / "ingestion.json"))
    dataset.save({"z_rejected": 2, "a_read": 10, "m_fraction": 0.25})
    text = (tmp_path / "metrics" / "ingestion.json").read_text()
    assert list(json.loads(text)) == ["a_read", "m_fraction", "z_rejected"]
    assert text.endswith("\n")
    assert dataset.load() == {"a_read": 10, "m_fraction": 0.25, "z_rejected": 2}
    assert dataset.exists()


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, True, "12", None], ids=repr
)
def test_non_finite_or_non_numeric_values_are_rejected_naming_the_metric(
    tmp_path: Path, bad: object
) -> None:
    dataset = MetricsDataset(path=str(tmp_path / "m.json"))
    with pytest.raises(DatasetError, match=rf"Metric 'broken' .* got {bad!r}"):
        dataset.save({"fine": 1.0, "broken": bad})
    assert not (tmp_path / "m.json").exists()  # nothing half-written


def test_active_run_receives_the_metrics_with_the_prefix(tmp_path: Path, tracking: str) -> None:
    dataset = MetricsDataset(path=str(tmp_path / "m.json"), prefix="ingestion.")
    with mlflow.start_run() as run:
        dataset.save({"items_read": 12, "rejected_fraction": 0.125})
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged == {"ingestion.items_read": 12.0, "ingestion.rejected_fraction": 0.125}


def test_without_an_active_run_nothing_is_logged(tmp_path: Path, tracking: str) -> None:
    assert mlflow.active_run() is None
    MetricsDataset(path=str(tmp_path / "m.json"), prefix="x.").save({"items_read": 3})
    # mlflow.log_metrics would have started a run implicitly; none may exist.
    assert mlflow.active_run() is None
    assert len(mlflow.search_runs(search_all_experiments=True)) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == {"items_read": 3}
