"""Kedro project settings for synthmed."""

from synthmed.hooks import MlflowRunGuard, PseudonymisationKeyHook, ReportingArtifactsHook

# The pseudonymisation key comes from Kedro's credentials (conf/local/credentials.yml) and is
# injected into the catalog by this hook, so that it never passes through parameters (which
# kedro-mlflow logs) and a missing key stops the run before any node writes.
HOOKS = (PseudonymisationKeyHook(), MlflowRunGuard(), ReportingArtifactsHook())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/test and conf/gpu override single sizes without restating whole pipelines.
    "merge_strategy": {"parameters": "soft"},
}
