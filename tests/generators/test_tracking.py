"""The MLflow tracker writes the run's resolved settings where the MLflow UI compares runs."""

from __future__ import annotations

import mlflow

from synthmed.generators.tracking import MlflowTracker


def test_resolved_settings_become_prefixed_run_parameters(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; monkeypatch restores its old value.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run() as run:
            MlflowTracker("ddpm").log_params({"mixed_precision": "bf16", "device": "cpu", "processes": "1"})
        params = mlflow.get_run(run.info.run_id).data.params
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
    assert params == {"ddpm.resolved.mixed_precision": "bf16", "ddpm.resolved.device": "cpu",
                      "ddpm.resolved.processes": "1"}
