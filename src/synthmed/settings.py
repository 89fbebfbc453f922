"""Kedro project settings for synthmed."""

from synthmed.core.console import install_error_display
from synthmed.hooks import (
    BuildInfoHook,
    ConfigCheckHook,
    MlflowRunGuard,
    ModelRegistryHook,
    PseudonymisationKeyHook,
    ReportingArtifactsHook,
    RunLockHook,
    StagingHook,
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
HOOKS = (
    ConfigCheckHook(), RunLockHook(), StagingHook(), PseudonymisationKeyHook(), MlflowRunGuard(),
    ReportingArtifactsHook(), ModelRegistryHook(), BuildInfoHook(),
)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/test and conf/gpu override single sizes without restating whole pipelines.
    "merge_strategy": {"parameters": "soft"},
}
