"""No MLflow run stays RUNNING: SIGTERM, Ctrl-C and SIGKILLed processes all end as KILLED."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from synthmed.mlflow_runs import HOST_TAG, PID_TAG, end_orphaned_runs

CHILD = textwrap.dedent(
    """
    import sys, time, mlflow
    mlflow.set_tracking_uri(sys.argv[1])
    run = mlflow.start_run(run_name="child")
    # kedro-mlflow can push the same run again (nested): MLflow's own exit handler would end
    # the leftover entry as FINISHED unless the guard empties the stack.
    mlflow.start_run(run_id=run.info.run_id, nested=True)
    from synthmed.mlflow_runs import guard_active_run
    guard_active_run()
    print("ready", flush=True)
    if sys.argv[2] == "interrupt":
        raise KeyboardInterrupt
    time.sleep(60)
    """
)


def _status(uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs(["0"], filter_string=f"attributes.run_name = '{name}'")
    return run.info.status


@pytest.mark.parametrize("how", ["sigterm", "interrupt"])
def test_a_terminated_or_interrupted_process_ends_its_run_killed(tmp_path, how):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, uri, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    if how == "sigterm":
        child.send_signal(signal.SIGTERM)
    child.wait(timeout=60)
    assert child.returncode != 0
    assert _status(uri, "child") == "KILLED"


def test_runs_of_dead_processes_on_this_host_are_ended(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    orphan = client.create_run("0", tags={PID_TAG: str(dead.pid), HOST_TAG: host}).info.run_id
    alive = client.create_run("0", tags={PID_TAG: str(os.getpid()), HOST_TAG: host}).info.run_id
    elsewhere = client.create_run("0", tags={PID_TAG: str(dead.pid), HOST_TAG: host + "-other"}).info.run_id

    assert end_orphaned_runs(client, ["0"]) == [orphan]
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(alive).info.status == "RUNNING"
    assert client.get_run(elsewhere).info.status == "RUNNING"


EXITING_CHILD = textwrap.dedent(
    """
    import os, sys, mlflow
    from mlflow.tracking import MlflowClient
    mlflow.set_tracking_uri(sys.argv[1])
    run = mlflow.start_run(run_name=sys.argv[2])
    from synthmed.mlflow_runs import guard_active_run
    guard_active_run()
    print(os.getpid(), flush=True)
    if sys.argv[2] == "finished":
        # As kedro-mlflow can: the run is ended through the client, the fluent stack keeps it.
        MlflowClient().set_terminated(run.info.run_id, status="FINISHED")
    # "unfinished": a normal interpreter exit with the run still RUNNING (a node called
    # sys.exit(0), a library's atexit path): MLflow's own handler would call that FINISHED.
    """
)


def _run_child(uri: str, how: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    from mlflow.tracking import MlflowClient

    result = subprocess.run([sys.executable, "-c", EXITING_CHILD, uri, how], capture_output=True, text=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = MlflowClient(uri).search_runs(["0"], filter_string=f"attributes.run_name = '{how}'")
    return result, run.data.tags


def test_a_run_that_finished_is_not_marked_killed_at_exit(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result, tags = _run_child(uri, "finished")
    assert _status(uri, "finished") == "FINISHED"
    assert "KILLED" not in result.stderr
    # The guard was armed (so not marking KILLED was its decision, not its absence).
    assert tags.get(PID_TAG) == result.stdout.strip() and tags.get(HOST_TAG) == socket.gethostname()


def test_a_run_left_running_at_a_normal_exit_is_marked_killed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result, tags = _run_child(uri, "unfinished")
    assert _status(uri, "unfinished") == "KILLED", result.stderr[-2000:]
    assert tags.get(PID_TAG) == result.stdout.strip()


def _child_json(script: str, tmp_path) -> dict:
    """Run ``script`` with an MLflow SQLite store in ``tmp_path`` and the project's catalog.yml; its last
    stdout line, as JSON."""
    import json

    from tests.conftest import PROJECT_ROOT

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = subprocess.run([sys.executable, "-c", script, uri, str(PROJECT_ROOT / "conf/base/catalog.yml"),
                             str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


TAGGING_CHILD = textwrap.dedent(
    """
    import json, sys
    import mlflow
    import pandas as pd
    import yaml
    from kedro.io import DataCatalog
    from mlflow.tracking import MlflowClient
    from synthmed.hooks import ReportingArtifactsHook
    from synthmed.mlflow_runs import tag_versions

    uri, catalog_yml, workdir = sys.argv[1:4]
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    chosen = client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    tag_versions(client, client.create_run(chosen).info.run_id, chosen, {"git_commit": "unknown"})
    mlflow.set_experiment("synthmed")
    info = {"git_commit": "c" * 40, "git_dirty": "false", "dvc_lock_sha256": "d" * 64, "kedro_env": "base+local",
            "synthmed_version": "0.1.0"}
    with mlflow.start_run() as run:
        tag_versions(client, run.info.run_id, run.info.experiment_id, info)
        # The project's catalog entries of the answer key and of a reporting table, under workdir.
        config = yaml.safe_load(open(catalog_yml))
        entries = {name: {**config[name], "filepath": workdir + "/" + config[name]["filepath"]}
                   for name in ("reader_key", "family_comparison")}
        catalog = DataCatalog.from_config(entries)
        hook = ReportingArtifactsHook()
        hook.after_catalog_created(catalog)
        for name in entries:
            catalog.save(name, pd.DataFrame({"image_id": ["a"], "truth": ["real"]}))
            hook.after_dataset_saved(name, None, None)
    def listed(path=""):
        out = []
        for item in client.list_artifacts(run.info.run_id, path):
            out += listed(item.path) if item.is_dir else [item.path]
        return out
    print(json.dumps({"artifacts": listed(), "tags": client.get_run(run.info.run_id).data.tags,
                      "kind": client.get_experiment(run.info.experiment_id).tags.get("mlflow.experimentKind"),
                      "chosen": client.get_experiment(chosen).tags.get("mlflow.experimentKind")}))
    """
)


def test_runs_carry_versions_the_experiment_opens_on_models_and_the_answer_key_is_not_logged(tmp_path):
    seen = _child_json(TAGGING_CHILD, tmp_path)
    assert seen["kind"] == "custom_model_development"  # what the MLflow 3 UI opens on model training with
    assert seen["chosen"] == "genai_development"  # a kind someone chose is kept
    tags = seen["tags"]
    assert tags["mlflow.source.git.commit"] == "c" * 40 and tags["synthmed.dvc_lock_sha256"] == "d" * 64
    assert tags["synthmed.kedro_env"] == "base+local" and tags["synthmed.version"] == "0.1.0"
    assert seen["artifacts"] == ["reporting/family_comparison.csv"]  # logged, but never the answer key


REGISTRY_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import mlflow
    import yaml
    from kedro.io import DataCatalog, MemoryDataset
    from mlflow.tracking import MlflowClient
    from synthmed.hooks import ModelRegistryHook

    uri, catalog_yml, workdir = sys.argv[1:4]
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("synthmed")
    # The project's catalog entry of the released folders (a dataset factory), under workdir.
    entry = yaml.safe_load(open(catalog_yml))["{family}.released_model"]
    catalog = DataCatalog.from_config({"{family}.released_model": {**entry, "path": workdir + "/" + entry["path"]}})
    hook = ModelRegistryHook()
    hook.after_catalog_created(catalog)
    hook.after_dataset_saved("ddpm.released_model", None, None)  # no active run: nothing registered
    runs = []
    for n in (1, 2):
        catalog["build_info"] = MemoryDataset({"git_commit": str(n) * 40, "dvc_lock_sha256": "d" * 64})
        with mlflow.start_run() as run:
            card = "---\\nfamily: ddpm\\n---\\n# ddpm generator, release " + str(n) + "\\n" + "x" * (6000 * (n - 1))
            catalog.save("ddpm.released_model", {"MODEL_CARD.md": card, "generator.json": {"family": "ddpm"},
                                                 "unet.safetensors": b"weights" + bytes([n])})
            hook.after_dataset_saved("ddpm.released_model", None, None)
            runs.append(run.info.run_id)
    client = MlflowClient()
    versions = sorted(client.search_model_versions("name='synthmed-ddpm'"), key=lambda v: int(v.version))
    got = Path(mlflow.artifacts.download_artifacts("models:/synthmed-ddpm/2", dst_path=workdir + "/got"))
    print(json.dumps({
        "runs": runs, "models": [m.name for m in client.search_registered_models()],
        "versions": [{"version": v.version, "run_id": v.run_id, "source": v.source, "tags": v.tags,
                      "description": v.description} for v in versions],
        "downloaded": sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()),
        "weights": (got / "unet.safetensors").read_bytes().decode("latin-1")}))
    """
)


def test_released_folders_are_registered_one_version_per_run_without_a_flavor(tmp_path):
    seen = _child_json(REGISTRY_CHILD, tmp_path)
    assert seen["models"] == ["synthmed-ddpm"]
    first, second = seen["versions"]
    assert (int(first["version"]), int(second["version"])) == (1, 2)
    for version, run_id, commit in ((first, seen["runs"][0], "1" * 40), (second, seen["runs"][1], "2" * 40)):
        assert version["run_id"] == run_id and version["source"] == f"runs:/{run_id}/release/ddpm"
        assert version["tags"]["mlflow.source.git.commit"] == commit
        assert version["tags"]["synthmed.dvc_lock_sha256"] == "d" * 64
    assert first["description"].startswith("---\nfamily: ddpm\n---\n# ddpm generator, release 1")
    # A card longer than the registry's column is cut, saying where the whole card is.
    assert len(second["description"]) == 5000
    assert second["description"].endswith("MODEL_CARD.md in this version's files]")
    # The version's files are the released folder as saved: no MLmodel, no pickle.
    assert seen["downloaded"] == [".synthmed-checksums.json", "MODEL_CARD.md", "generator.json", "unet.safetensors"]
    assert seen["weights"] == "weights\x02"
