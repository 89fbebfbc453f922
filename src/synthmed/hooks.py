"""Project hooks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from kedro.framework.hooks import hook_impl

from synthmed.datasets.secrets import PseudonymisationKeyDataset

logger = logging.getLogger(__name__)

KEY_DATASET = "pseudonymisation_key"
SOURCE_DATASET = "raw_sources"
CREDENTIALS_ENTRY = "pseudonymisation"
# Kedro reads conf/local only when it is the run environment; the key must be found with
# `--env gpu` or `--env test` too, so conf/local/credentials.yml is also read directly.
LOCAL_CREDENTIALS = Path("conf/local/credentials.yml")


class PseudonymisationKeyHook:
    """Puts the pseudonymisation key into the catalog and checks it before a run.

    The key is a credential, not a parameter: kedro-mlflow logs parameters to MLflow. It is
    looked up in the run environment's credentials, then in conf/local/credentials.yml.
    Checking it in ``before_pipeline_run`` makes a missing key stop the run before any node
    has written anything.
    """

    def __init__(self) -> None:
        self._project_path = Path.cwd()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project_path = Path(context.project_path)

    @hook_impl
    def after_catalog_created(self, catalog: Any, conf_creds: dict[str, Any]) -> None:
        credentials = (conf_creds or {}).get(CREDENTIALS_ENTRY)
        local = self._project_path / LOCAL_CREDENTIALS
        if credentials is None and local.is_file():
            credentials = (yaml.safe_load(local.read_text()) or {}).get(CREDENTIALS_ENTRY)
        source = catalog.get(SOURCE_DATASET) if SOURCE_DATASET in catalog else None
        catalog[KEY_DATASET] = PseudonymisationKeyDataset(credentials=credentials, source=source)

    # tryfirst: run before kedro-mlflow's before_pipeline_run opens an MLflow run, so a
    # missing key leaves no run behind (Kedro calls on_pipeline_error only for node errors).
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if KEY_DATASET in pipeline.inputs():
            catalog.load(KEY_DATASET)


class MlflowRunGuard:
    """Leaves no MLflow run RUNNING (``synthmed.mlflow_runs``).

    ``trylast``: runs after kedro-mlflow has opened the pipeline's run.
    """

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        import mlflow

        from synthmed.mlflow_runs import end_orphaned_runs, guard_active_run

        run = mlflow.active_run()
        if run is None:
            return
        end_orphaned_runs(mlflow.tracking.MlflowClient(), [run.info.experiment_id])
        guard_active_run()


class ReportingArtifactsHook:
    """Every file a node saves to the ``reporting`` layer also goes to the active MLflow run.

    Figures (PNG), tables (CSV) and the HTML report land under the run's artifacts in the
    same layout as ``data/08_reporting``, so the MLflow UI shows what ``dvc plots`` and the
    report show. Metrics reach MLflow through ``MetricsDataset`` (same names as the JSON).
    Folders (the reader kit) are not logged: they are for people, via DVC.
    """

    def __init__(self) -> None:
        self._catalog: Any = None

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        import mlflow

        if self._catalog is None or mlflow.active_run() is None:
            return
        dataset = self._catalog.get(dataset_name)
        layer = ((getattr(dataset, "metadata", None) or {}).get("kedro-viz") or {}).get("layer")
        if layer != "reporting":
            return
        described = dataset._describe()
        path = Path(str(described.get("filepath") or described.get("path") or ""))
        if path.suffix in (".png", ".csv", ".html") and path.is_file():
            folder = path.parent.as_posix().split("08_reporting", 1)[-1].strip("/")
            mlflow.log_artifact(str(path), artifact_path=f"reporting/{folder}".rstrip("/"))
