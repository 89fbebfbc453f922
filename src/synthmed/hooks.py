"""Project hooks."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from kedro.framework.context import CatalogCommandsMixin
from kedro.framework.hooks import hook_impl
from kedro.io import DataCatalog, MemoryDataset, SharedMemoryDataset

from synthmed.core import distributed
from synthmed.core.atomic import disk_full_reported, uri_path
from synthmed.core.catalog import replace_dataset
from synthmed.datasets.secrets import PseudonymisationKeyDataset

logger = logging.getLogger(__name__)

KEY_DATASET = "pseudonymisation_key"
BUILD_INFO_DATASET = "build_info"
SOURCE_DATASET = "raw_sources"
# The pipelines read the source folder as `raw_sources@files` and the sample_data pipeline
# writes `raw_sources@sample` (Kedro transcoding: one dataset for the run order, so
# `kedro run --pipelines sample_data,ingestion` writes the sample before reading it). Users
# configure `raw_sources` alone; this alias makes `raw_sources@files` the folder they chose,
# while the sample is always written to its own fixed path.
SOURCE_INPUT = f"{SOURCE_DATASET}@files"
CREDENTIALS_ENTRY = "pseudonymisation"
# Kedro reads conf/local only when it is the run environment; the key must be found with
# `--env gpu` or `--env test` too, so conf/local/credentials.yml is also read directly.
LOCAL_CREDENTIALS = Path("conf/local/credentials.yml")


class ConfigCheckHook:
    """Checks the configuration once, before any node or MLflow run starts.

    1. Every YAML file of the run's configuration (``conf/base``, the run environment and
       ``conf/local/credentials.yml``, which ``PseudonymisationKeyHook`` reads directly) is
       parsed for syntax: a broken file stops the run with one line naming it and the line
       (``conf/local/credentials.yml line 3, column 5: ...``).
    2. The whole parameter tree, ``--params`` overrides applied, is validated against
       ``synthmed.parameters.PARAMETER_SCHEMA``: unknown blocks and keys (with the closest
       valid name), missing keys, wrong types and out-of-range values.

    ``tryfirst``: before kedro-mlflow's ``after_context_created`` reads ``mlflow.yml`` and
    creates its tracking database, so a wrong parameter stops the run before MLflow writes.
    The tree it checks is the one the run uses: it is set on the context's config loader
    (``OmegaConfigLoader`` returns a key set on it instead of reading the files again), so Kedro
    does not parse the parameter files a second time for the catalog (about 0.4 CPU-s).
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        from kedro.framework.project import settings

        from synthmed.core.config import check_yaml_files
        from synthmed.parameters import validate_parameters

        project = Path(context.project_path)
        conf = project / settings.CONF_SOURCE
        envs = [getattr(settings, "CONFIG_LOADER_ARGS", {}).get("base_env", "base"), context.env or "local"]
        files = sorted({f for env in envs for pattern in ("*.yml", "*.yaml") for f in (conf / env).rglob(pattern)})
        if (project / LOCAL_CREDENTIALS).is_file():
            files.append(project / LOCAL_CREDENTIALS)
        check_yaml_files(sorted(set(files)), project)
        loader = context.config_loader
        parameters = loader["parameters"]  # --params overrides merged in by the loader
        validate_parameters(parameters)
        loader["parameters"] = parameters


class DistributedRunHook:
    """Under a launcher with several processes (``synthmed train|launch --processes N``, torchrun,
    ``accelerate launch``), only the pipelines of ``distributed.MULTI_PROCESS_PIPELINES`` may run:
    training, sampling and rebalancing.

    Their nodes work together across processes or are cheap: training is data-parallel
    (Accelerate's process group: each process trains on its share of every batch, gradients are
    averaged); sampling draws a block of the batches on each process and the memorisation gate
    scores a block of its queries, gathered so every process holds the whole result
    (``synthmed.core.collectives``); the nodes that only build files (PNGs, the sampled grid, the
    published folder) do that work on the main process alone. Any other node (the evaluation's
    metrics and classifiers, the data pipelines) would run N times over the same data.
    ``tryfirst`` and registered last: it refuses
    before the run lock, the key check and the MLflow run, on every process alike.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if not distributed.is_distributed():
            return
        from kedro.framework.project import pipelines

        allowed = {node for name in distributed.MULTI_PROCESS_PIPELINES if name in pipelines
                   for node in pipelines[name].nodes}
        others = sorted(node.name for node in pipeline.nodes if node not in allowed)
        names = ", ".join(repr(name) for name in distributed.MULTI_PROCESS_PIPELINES)
        if others:
            raise ValueError(
                f"This run has {distributed.world_size()} processes (WORLD_SIZE), but only the pipelines {names} "
                f"run on several processes; it also has {len(others)} other node(s): "
                f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}. Run those with one process "
                f"(`kedro run --pipelines ...`), then `synthmed train|launch --processes N`.")
        logger.info("Running on %d processes; this is %s%s.", distributed.world_size(), distributed.describe(),
                    " (the main process: it saves the outputs, checkpoints and MLflow records)"
                    if distributed.is_main_process() else " (it trains or takes its share; the main process saves)")


class MainProcessCatalog(DataCatalog, CatalogCommandsMixin):
    """Kedro's catalog, except that only the main process of a launch saves to storage.

    ``settings.DATA_CATALOG_CLASS`` on the processes other than the main one (the main one
    keeps Kedro's own; the mixin is the one Kedro adds to its default catalog, for
    ``kedro catalog`` commands). On the other processes of a multi-process launch
    (``synthmed.core.distributed``), saving a dataset that writes somewhere (files, MLflow)
    does nothing: they still run the nodes, so they train together with the main process,
    but one copy of each output is written, by rank 0. In-memory datasets still save, and an
    output whose save was skipped is kept in memory and loaded from there by the later nodes
    of the run (the rebalancing plan, a CSV, feeds the next node), so a node's outputs reach
    the next node on every process. A single process saves as usual.
    """

    def save(self, ds_name: str, data: Any) -> None:
        if not distributed.is_main_process() and \
                not isinstance(self[ds_name], (MemoryDataset, SharedMemoryDataset)):
            logger.debug("Not saving %s on %s: the main process saves it.", ds_name, distributed.describe())
            self._unsaved()[ds_name] = data
            return
        super().save(ds_name, data)

    def load(self, ds_name: str, version: str | None = None) -> Any:
        """What this process computed for ``ds_name`` when it skipped the save, else the stored data."""
        unsaved = self._unsaved()
        if ds_name in unsaved:
            return unsaved[ds_name]
        return super().load(ds_name, version)

    def release(self, ds_name: str) -> None:
        self._unsaved().pop(ds_name, None)
        super().release(ds_name)

    def _unsaved(self) -> dict[str, Any]:
        # Outputs whose save was skipped, kept for the later nodes of this process: they read
        # what this process computed, never a file the main process may not have written yet.
        return self.__dict__.setdefault("_skipped_saves", {})


class SpillRunHook:
    """Spill folders that outlive the process that made them, under multi-process runners.

    Ingestion's readers leave decoded arrays and de-identified copies in spill folders
    (``synthmed.core.parallel.SpillFolder``) that the next nodes read. ``SequentialRunner`` and
    ``ThreadRunner`` run every node in this process: a folder goes when nothing refers to it.
    Under ``ParallelRunner`` nodes run in worker processes, so before the run this hook sets
    ``SYNTHMED_SPILL_ROOT`` to a temporary folder of the run (inherited by the workers); folders
    made there belong to the run, and the hook removes the root when the run ends or fails.
    """

    def __init__(self) -> None:
        self._root: Path | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        import os
        import re
        import tempfile

        from synthmed.core.parallel import SPILL_ROOT_VARIABLE

        # Kedro records the runner as its class name or as the instance's repr ("<kedro.runner.X object at ...>").
        found = re.search(r"(\w*Runner)\b", str(run_params.get("runner") or ""))
        runner = found.group(1) if found else "SequentialRunner"
        if runner in ("SequentialRunner", "ThreadRunner") or SPILL_ROOT_VARIABLE in os.environ:
            return
        self._root = Path(tempfile.mkdtemp(prefix="synthmed-run-spill-"))
        os.environ[SPILL_ROOT_VARIABLE] = str(self._root)
        logger.info("Runner %s: spill folders of this run under %s (removed when the run ends).", runner, self._root)

    def _remove(self) -> None:
        import os
        import shutil

        from synthmed.core.parallel import SPILL_ROOT_VARIABLE

        if self._root is not None:
            os.environ.pop(SPILL_ROOT_VARIABLE, None)
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._remove()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._remove()


class RunLockHook:
    """One run at a time per project: an exclusive lock on ``data/.locks/run.lock`` is held
    from ``before_pipeline_run`` to the end of the run (``synthmed.core.runlock``).

    One lock for the whole project rather than one per pipeline: pipelines read each
    other's outputs (training reads the slices extraction writes), so per-output locks
    would also need shared locks on every input to stop a reader seeing half of a rewrite;
    runs on one 2-core machine gain little from running side by side, and MLflow's SQLite
    store is single-writer anyway. ``SYNTHMED_LOCK=wait`` (default) queues a second run
    behind the first (its log names the holder every 30 s, up to ``SYNTHMED_LOCK_TIMEOUT_S``);
    ``SYNTHMED_LOCK=fail`` makes it stop at once with the holder's pid, host and command.
    """

    LOCK_FILE = Path("data/.locks/run.lock")

    def __init__(self) -> None:
        self._project_path = Path.cwd()
        self._lock: Any = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project_path = Path(context.project_path)

    # tryfirst: no MLflow run is opened, and nothing is written, by a run that waits or fails.
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from synthmed.core.runlock import RunLock, settings_from_env

        mode, timeout_s = settings_from_env()
        self._lock = RunLock(self._project_path / self.LOCK_FILE, mode=mode, timeout_s=timeout_s)
        self._lock.acquire()

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def add_source_alias(catalog: Any) -> Any:
    """``raw_sources@files`` in ``catalog`` is the ``raw_sources`` the user configured; returns it (or None)."""
    source = catalog.get(SOURCE_DATASET) if SOURCE_DATASET in catalog else None
    if source is not None:
        catalog[SOURCE_INPUT] = source
    return source


class PseudonymisationKeyHook:
    """Puts the pseudonymisation key into the catalog and checks it before identifiable
    data is read.

    The key is a credential, not a parameter: kedro-mlflow logs parameters to MLflow. It is
    looked up in the run environment's credentials, then in conf/local/credentials.yml.

    When the check runs: if the raw source folder exists when the run starts, in
    ``before_pipeline_run`` (a missing key stops the run before any node has written
    anything and before an MLflow run is opened). If it does not exist yet (a fresh clone:
    ``sample_data`` writes the public sample in this same run), the check waits for
    ``before_node_run`` of the first node that reads the source folder or the key, that is
    before anything derived from the source is written; the key dataset then decides on
    the folder as written (the public sample needs no key, anything else does).
    """

    def __init__(self) -> None:
        self._project_path = Path.cwd()
        self._pending = False

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project_path = Path(context.project_path)

    @hook_impl
    def after_catalog_created(self, catalog: Any, conf_creds: dict[str, Any]) -> None:
        from synthmed.core.config import parse_yaml_file

        credentials = (conf_creds or {}).get(CREDENTIALS_ENTRY)
        local = self._project_path / LOCAL_CREDENTIALS
        if credentials is None and local.is_file():
            credentials = (parse_yaml_file(local, LOCAL_CREDENTIALS.as_posix()) or {}).get(CREDENTIALS_ENTRY)
        source = add_source_alias(catalog)
        catalog[KEY_DATASET] = PseudonymisationKeyDataset(credentials=credentials, source=source)

    # tryfirst: run before kedro-mlflow's before_pipeline_run opens an MLflow run, so a
    # missing key leaves no run behind (Kedro calls on_pipeline_error only for node errors).
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._pending = False
        if KEY_DATASET not in pipeline.inputs():
            return
        source = catalog.get(SOURCE_DATASET) if SOURCE_DATASET in catalog else None
        if source is not None and not source.exists():
            self._pending = True
            logger.info("The raw source folder does not exist yet: the pseudonymisation key is checked "
                        "before the first node that reads it.")
            return
        catalog.load(KEY_DATASET)

    @hook_impl(tryfirst=True)
    def before_node_run(self, node: Any, catalog: Any) -> None:
        if self._pending and ({SOURCE_INPUT, KEY_DATASET} & set(node.inputs)):
            self._pending = False
            catalog.load(KEY_DATASET)


class BuildInfoHook:
    """The ``build_info`` dataset (``synthmed.core.build_info``) with the run's Kedro environment.

    The catalog entry cannot know ``--env``; this hook replaces it with one that does, so the
    dataset card names the environment actually used.
    """

    def __init__(self) -> None:
        self._project_path = Path.cwd()
        self._env: str | None = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        from kedro.framework.project import settings

        self._project_path = Path(context.project_path)
        self._env = context.env or getattr(settings, "CONFIG_LOADER_ARGS", {}).get("default_run_env", "local")

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        from synthmed.datasets.build_info import BuildInfoDataset

        info = BuildInfoDataset(project_path=str(self._project_path), env=self._env)
        replace_dataset(catalog, BUILD_INFO_DATASET, info)


# MLflow's start_run looks for a notebook (Databricks' dbutils, a Jupyter or VS Code kernel) by
# importing IPython: 0.4-0.5 CPU-s of every `kedro run`'s start-up once MLflow is imported
# (benchmarks/RESULTS.md). A notebook shell exists only in a process that has imported IPython;
# while one has not, the import is blocked around kedro-mlflow's before_pipeline_run, and MLflow's
# probes read the ImportError as "no notebook": the answer IPython itself would give them.
_NOTEBOOK_PROBE = "IPython"
_probe_blocked = False


def block_notebook_probe() -> None:
    """Blocks ``import IPython`` (``sys.modules[name] = None``) unless IPython is already imported."""
    global _probe_blocked
    if _NOTEBOOK_PROBE not in sys.modules:
        sys.modules[_NOTEBOOK_PROBE] = None  # type: ignore[assignment]
        _probe_blocked = True


def lift_notebook_probe() -> None:
    """Undoes ``block_notebook_probe``: IPython imports normally again (idempotent)."""
    global _probe_blocked
    if _probe_blocked and sys.modules.get(_NOTEBOOK_PROBE, "") is None:
        del sys.modules[_NOTEBOOK_PROBE]
    _probe_blocked = False


class NotebookProbeHook:
    """Spares MLflow's notebook probe its import of IPython when the run opens (see above).

    ``tryfirst`` blocks the import before kedro-mlflow's ``before_pipeline_run`` opens the
    run; ``MlflowRunGuard`` (``trylast``) lifts it once the run is open, and the run's end or
    error lifts it if kedro-mlflow's hook failed in between. ``kedro ipython`` and notebooks
    have IPython imported already and are left alone.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        block_notebook_probe()

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        lift_notebook_probe()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        lift_notebook_probe()


class MlflowRunGuard:
    """Leaves no MLflow run RUNNING and tags it with its versions (``synthmed.mlflow_runs``).

    ``trylast``: runs after kedro-mlflow has opened the pipeline's run.
    """

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        lift_notebook_probe()  # kedro-mlflow has opened the run: nodes import what they like
        import mlflow

        from synthmed.mlflow_runs import end_orphaned_runs, guard_active_run, tag_versions

        run = mlflow.active_run()
        if run is None:
            return
        client = mlflow.tracking.MlflowClient()
        end_orphaned_runs(client, [run.info.experiment_id])
        guard_active_run()
        if BUILD_INFO_DATASET in catalog:
            tag_versions(client, run.info.run_id, run.info.experiment_id, catalog.load(BUILD_INFO_DATASET))


class _CatalogHook:
    """Keeps the run's catalog, to look up the datasets a node saves."""

    def __init__(self) -> None:
        self._catalog: Any = None

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        self._catalog = catalog

    def _saved_during_a_run(self, dataset_name: str) -> Any:
        """The saved dataset, or None without a catalog or an active MLflow run (tracking disabled)."""
        import mlflow

        if self._catalog is None or mlflow.active_run() is None:
            return None
        return self._catalog.get(dataset_name)


def dataset_path(dataset: Any) -> Path:
    """Where a dataset saves (its described ``filepath`` or ``path``); ``Path()`` for one without a path."""
    described = dataset._describe()
    return Path(str(described.get("filepath") or described.get("path") or ""))


class ReportingArtifactsHook(_CatalogHook):
    """Every file a node saves to the ``reporting`` layer also goes to the active MLflow run.

    Figures (PNG), tables (CSV) and the HTML report land under the run's artifacts in the
    same layout as ``data/08_reporting``, so the MLflow UI shows what ``dvc plots`` and the
    report show. Metrics reach MLflow through ``MetricsDataset`` (same names as the JSON).
    Folders (the reader kit) are not logged: they are for people, via DVC. A dataset whose
    catalog metadata has ``synthmed: {mlflow_artifact: false}`` is never logged: the reader
    study's answer key stays in ``data/08_reporting/reader_key/``, apart from the readers.
    """

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        import mlflow

        if (dataset := self._saved_during_a_run(dataset_name)) is None:
            return
        metadata = getattr(dataset, "metadata", None) or {}
        layer = (metadata.get("kedro-viz") or {}).get("layer")
        if layer != "reporting" or not (metadata.get("synthmed") or {}).get("mlflow_artifact", True):
            return
        path = dataset_path(dataset)
        if path.suffix in (".png", ".csv", ".html") and path.is_file():
            folder = path.parent.as_posix().split("08_reporting", 1)[-1].strip("/")
            with disk_full_reported(uri_path(mlflow.get_artifact_uri())):
                mlflow.log_artifact(str(path), artifact_path=f"reporting/{folder}".rstrip("/"))


class ModelRegistryHook(_CatalogHook):
    """Each released generator folder goes to MLflow's model registry (``synthmed.mlflow_runs.register_release``).

    A dataset whose catalog metadata has ``synthmed: {registered_model: NAME}`` (the release
    pipeline's ``{family}.released_model``) is, once saved, logged as an artifact of the active
    run and registered as a new version of ``NAME``, tagged with the run's versions
    (``build_info``). Nothing happens without an active run (MLflow tracking disabled).
    """

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        import mlflow

        if (dataset := self._saved_during_a_run(dataset_name)) is None:
            return
        model_name = ((getattr(dataset, "metadata", None) or {}).get("synthmed") or {}).get("registered_model")
        if not model_name:
            return
        from synthmed.mlflow_runs import register_release

        info = self._catalog.load(BUILD_INFO_DATASET) if BUILD_INFO_DATASET in self._catalog else {}
        folder = dataset_path(dataset)
        with disk_full_reported(uri_path(mlflow.get_artifact_uri())):
            register_release(mlflow.tracking.MlflowClient(), mlflow.active_run().info.run_id, str(model_name),
                             folder, info)


class StudiesIndexHook:
    """After a run that wrote a 2D study's table, the studies' page is written again.

    A study's table is an output of the run saved to ``<root>/<study>/table.csv`` (``study`` one
    of ``synthmed.protocols.studies.STUDIES``); when the run ends (or fails after saving it),
    ``<root>/index.html`` is rendered again from every table there (`write_studies_index`, what
    ``synthmed studies`` writes), so a study run on its own never leaves the page showing its
    previous table. The outputs are read from the pipeline, not from save events, which
    ParallelRunner and Dask fire in their workers. The hook never fails a run: a table of another
    study that cannot be read, or a page that cannot be written, leaves a warning naming the file.
    """

    @hook_impl
    def after_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        self._write(pipeline, catalog)

    @hook_impl
    def on_pipeline_error(self, pipeline: Any, catalog: Any) -> None:
        self._write(pipeline, catalog)

    @staticmethod
    def _write(pipeline: Any, catalog: Any) -> None:
        from synthmed.protocols.studies import STUDIES, write_studies_index

        try:
            paths = [dataset_path(catalog.get(name)) for name in pipeline.all_outputs() if name in catalog]
        except Exception as exc:  # noqa: BLE001 - a page is not worth failing a finished run for
            logger.warning("The studies' page was not written again: %s", exc)
            return
        roots = {path.parent.parent for path in paths
                 if path.name == "table.csv" and path.parent.name in STUDIES and path.is_file()}
        for root in sorted(roots):
            try:
                index, found = write_studies_index(root)
            except Exception as exc:  # noqa: BLE001 - as above, and the message names the file
                logger.warning("The studies' page %s was not written again: %s", root / "index.html", exc)
                continue
            logger.info("Studies' page written again: %s (%d of %d studies)", index, sum(found.values()), len(found))


class StagingHook:
    """Outputs in the primary layer are staged and published only after the run's checks
    (``synthmed.core.staging``).

    In ``before_pipeline_run`` (after the run lock is held), every output of the run whose
    path lies in ``data/03_primary`` is swapped in the catalog for the same dataset at its
    staged path. The staged outputs are published (moved into place) as soon as every node
    that writes one, and every node tagged ``gate`` (the checks: rejection rate, conservation,
    quarantine), has finished; a run that fails before that discards them, so the previous
    primary layer stays intact. Later nodes of a long run (training, evaluation) then read
    the published layer, and their failure does not undo a checked preprocessing.
    """

    GATE_TAG = "gate"

    def __init__(self) -> None:
        self._project_path = Path.cwd()
        self._area: Any = None
        self._pending: set[str] = set()
        self._catalog: Any = None
        self._published: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project_path = Path(context.project_path)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from kedro.io import AbstractDataset

        from synthmed.core.staging import StagingArea, remove_stale_staging, staged_layer

        remove_stale_staging(self._project_path)
        area = StagingArea(self._project_path)
        outputs = pipeline.all_outputs()
        config = catalog.to_config()[0] if outputs else {}
        staged_names = set()
        for name in sorted(outputs):
            entry = dict(config.get(name) or {})
            key = "filepath" if "filepath" in entry else "path" if "path" in entry else None
            if key is None or not staged_layer(Path(str(entry[key])), self._project_path):
                continue
            self._published[name] = catalog.get(name)
            entry[key] = str(area.stage(Path(str(entry[key]))))
            replace_dataset(catalog, name, AbstractDataset.from_config(name, entry))
            staged_names.add(name)
        self._area = area if staged_names else None
        self._catalog = catalog
        self._pending = {
            node.name for node in pipeline.nodes
            if staged_names & set(node.outputs) or self.GATE_TAG in node.tags
        }
        if staged_names:
            logger.info("Staging %d primary-layer output(s) until the run's checks pass: %s",
                        len(staged_names), ", ".join(sorted(staged_names)))

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        self._pending.discard(node.name)
        if not self._pending:
            self._commit()

    # tryfirst: publish while the run lock is still held.
    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._commit()

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if self._area is not None:
            self._area.discard()
            self._area = None
        self._published = {}

    def _commit(self) -> None:
        if self._area is not None:
            self._area.commit()
            self._area = None
        # The nodes still to run read the published outputs again.
        for name, dataset in self._published.items():
            replace_dataset(self._catalog, name, dataset)
        self._published = {}
