"""MLflow runs are ended as FINISHED, FAILED or KILLED, never left RUNNING.

kedro-mlflow ends a run when the pipeline finishes or a node raises. Three exits escape it:

- Ctrl-C (``KeyboardInterrupt`` is not an ``Exception``, so Kedro's error hooks do not run);
- SIGTERM (the default handler exits without cleanup);
- SIGKILL or a power cut (nothing runs in the process).

``guard_active_run`` tags the run with this process and host, turns SIGTERM into a normal
exit and ends an unfinished run as KILLED at interpreter exit; ``end_orphaned_runs``, run at
the start of every pipeline, ends as KILLED the RUNNING runs whose process is gone.

``tag_versions`` marks the experiment as model development (the MLflow 3 UI then opens on
its runs and models, not on the GenAI traces page) and tags each run with what it was built
from: the git commit (MLflow's own ``mlflow.source.git.commit``), the ``dvc.lock`` hash, the
Kedro environment and the synthmed version.

``register_release`` puts a released generator folder (``data/09_release/models/<family>``)
into MLflow's model registry: the folder becomes an artifact of the run and a new version of
the registered model ``synthmed-<family>`` points at it (``runs:/<run>/release/<family>``),
with the model card as description and the run's versions as tags. No model flavor is used
(``mlflow.pytorch`` / ``pyfunc`` would pickle): a version with a source URI needs none. The
registry needs a database-backed store in older MLflow versions; the project's store is
SQLite (``conf/base/mlflow.yml``), which has it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PID_TAG = "synthmed.pid"
HOST_TAG = "synthmed.host"
# The experiment tag the MLflow 3 UI reads to choose the experiment's landing page (mlflow 3.17.2:
# "genai_development" opens on traces, "custom_model_development" on runs and models).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
# build_info key -> run tag
VERSION_TAGS = {"git_dirty": "synthmed.git_dirty", "dvc_lock_sha256": "synthmed.dvc_lock_sha256",
                "kedro_env": "synthmed.kedro_env", "synthmed_version": "synthmed.version"}


def tag_versions(client: Any, run_id: str, experiment_id: str, info: dict[str, str]) -> None:
    """Experiment kind (unless someone chose one) and the run's versions (``synthmed.core.build_info``)."""
    experiment = client.get_experiment(experiment_id)
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    tags = {tag: info[key] for key, tag in VERSION_TAGS.items() if key in info}
    if info.get("git_commit", "unknown") != "unknown":
        tags[GIT_COMMIT_TAG] = info["git_commit"]
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


RELEASE_ARTIFACT_PATH = "release"
# The registry's description columns hold at most 5,000 characters (MLflow's SQL schema).
DESCRIPTION_LIMIT = 5000
MODEL_CARD = "MODEL_CARD.md"


def _description(card: str) -> str:
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    note = "\n\n[... the full card is MODEL_CARD.md in this version's files]"
    return card[:DESCRIPTION_LIMIT - len(note)] + note


def register_release(client: Any, run_id: str, model_name: str, folder: Path, info: dict[str, str]) -> Any:
    """Log ``folder`` as the run's artifact ``release/<folder name>`` and register it as a new version of
    ``model_name`` (created when missing). Returns the ``ModelVersion``.

    Args:
        info: the run's versions (``synthmed.core.build_info``): git commit, ``dvc.lock`` sha256, ...
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    folder = Path(folder)
    card_file = folder / MODEL_CARD
    if not card_file.is_file():
        raise FileNotFoundError(f"{folder} has no {MODEL_CARD}: only released generator folders (written by the "
                                "release pipeline) are registered. Run `kedro run --pipelines release`.")
    card = card_file.read_text(encoding="utf-8")
    artifact_path = f"{RELEASE_ARTIFACT_PATH}/{folder.name}"
    client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)
    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        client.create_registered_model(
            model_name, description=f"synthmed generator `{folder.name}`: one version per released run; each "
                                    "version's description is its model card, its files the released folder.")
    tags = {tag: info[key] for key, tag in VERSION_TAGS.items() if key in info}
    if info.get("git_commit", "unknown") != "unknown":
        tags[GIT_COMMIT_TAG] = info["git_commit"]
    version = client.create_model_version(model_name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id,
                                          description=_description(card), tags=tags)
    logger.info("Registered %s version %s (MLflow run %s, artifact %s)", model_name, version.version, run_id,
                artifact_path)
    return version


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_orphaned_runs(client: Any, experiment_ids: list[str]) -> list[str]:
    """End as KILLED the RUNNING runs started on this host by a process that no longer exists.

    Returns:
        The ids of the runs that were ended.
    """
    host = socket.gethostname()
    ended = []
    runs = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000)
    for run in runs:
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or PID_TAG not in tags:
            continue
        if not _alive(int(tags[PID_TAG])):
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    if ended:
        logger.warning("Ended %d MLflow run(s) left RUNNING by a killed process as KILLED", len(ended))
    return ended


def _end_unfinished() -> None:
    """At interpreter exit: end the active run as KILLED if the tracking store still has it RUNNING.

    kedro-mlflow may end its run through the client while the fluent run stack still holds
    it, so ``mlflow.active_run()`` alone does not tell a finished run from an interrupted one.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    # Empty the whole fluent stack: MLflow's own exit handler would otherwise end what is
    # left as FINISHED, overwriting KILLED (the same run can be on the stack twice).
    client = MlflowClient()
    killed: set[str] = set()
    while (run := mlflow.active_run()) is not None:
        run_id = run.info.run_id
        status = client.get_run(run_id).info.status
        if status == "RUNNING" or run_id in killed:
            if run_id not in killed:
                logger.warning("Run ended before the pipeline finished: marking MLflow run %s KILLED", run_id)
            killed.add(run_id)
            mlflow.end_run(status="KILLED")
        else:
            mlflow.end_run(status=status)  # only pops the stack; the stored status stays


def _on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)  # a normal exit: atexit handlers (and _end_unfinished) run


def guard_active_run() -> None:
    """Tag the active run with this process and make every exit end it (see module doc)."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return
    mlflow.set_tags({PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()})
    atexit.register(_end_unfinished)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
