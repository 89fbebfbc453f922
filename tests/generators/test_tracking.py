"""The MLflow tracker writes the run's resolved settings where the MLflow UI compares runs."""

from __future__ import annotations

import mlflow

from synthmed.generators.tracking import MlflowTracker


def test_resolved_settings_become_prefixed_run_parameters(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        with mlflow.start_run() as run:
            MlflowTracker("ddpm").log_params({"mixed_precision": "bf16", "device": "cpu", "processes": "1"})
        params = mlflow.get_run(run.info.run_id).data.params
    finally:
        mlflow.set_tracking_uri(previous)
    assert params == {"ddpm.resolved.mixed_precision": "bf16", "ddpm.resolved.device": "cpu",
                      "ddpm.resolved.processes": "1"}
