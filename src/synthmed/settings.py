"""Kedro project settings for synthmed."""

from synthmed.core.console import install_error_display
from synthmed.core.distributed import is_main_process
from synthmed.hooks import (
    BuildInfoHook,
    ConfigCheckHook,
    DistributedRunHook,
    MainProcessCatalog,
    MlflowRunGuard,
    ModelRegistryHook,
    NotebookProbeHook,
    PseudonymisationKeyHook,
    ReportingArtifactsHook,
    RunLockHook,
    SpillRunHook,
    StagingHook,
    StudiesIndexHook,
)

# A failed command ends with synthmed's own error message first, its traceback in the log
# file (conf/logging.yml); other exceptions keep Python's full traceback.
install_error_display()

# ConfigCheckHook: broken YAML files and wrong parameters stop a run before it starts.
# The pseudonymisation key comes from Kedro's credentials (conf/local/credentials.yml) and is
# injected into the catalog by PseudonymisationKeyHook, so that it never passes through
# parameters (which kedro-mlflow logs) and a missing key stops the run before any node writes.
# Order matters among the `tryfirst` before_pipeline_run hooks: pluggy calls the one
# registered last first, so the key is checked before RunLockHook creates its lock file
# (a run refused for a missing key writes nothing under data/).
# SpillRunHook: ingestion's spill folders belong to the run under ParallelRunner (workers hand them on).
# DistributedRunHook, registered last, refuses first a multi-process run of anything but training,
# sampling and rebalancing.
# NotebookProbeHook, registered first, is the last `tryfirst` one: it blocks MLflow's import of
# IPython only once the checks above have passed, just before kedro-mlflow opens the run.
HOOKS = (
    NotebookProbeHook(), ConfigCheckHook(), RunLockHook(), StagingHook(), PseudonymisationKeyHook(), MlflowRunGuard(),
    ReportingArtifactsHook(), ModelRegistryHook(), StudiesIndexHook(), BuildInfoHook(), SpillRunHook(),
    DistributedRunHook(),
)

# Several processes (`synthmed train|launch --processes N`, torchrun, accelerate launch): the
# main one (rank 0, read from the launcher's environment by synthmed.core.distributed) runs
# every hook and saves; the others (training, or taking their share of sampling and the gate)
# keep only the hooks that read (configuration, key, build info) and the refusal of other
# pipelines: no run lock (the main process holds it for the run), no staging, no MLflow run
# (kedro-mlflow's hook disabled: it would open one per process, and log parameters, metrics and
# artifacts N times), no kedro-viz statistics file, no telemetry. Their catalog saves are
# skipped (MainProcessCatalog); checkpoints are written by rank 0 alone
# (synthmed.generators.training).
if not is_main_process():
    HOOKS = (ConfigCheckHook(), PseudonymisationKeyHook(), BuildInfoHook(), DistributedRunHook())
    DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow", "kedro-viz", "kedro-telemetry")
    DATA_CATALOG_CLASS = MainProcessCatalog

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/test and conf/gpu override single sizes without restating whole pipelines.
    "merge_strategy": {"parameters": "soft"},
}
