"""Training, sampling and rebalancing on several processes through Kedro (`synthmed train|launch
--processes N`).

Fast tests: the rank read from the launcher's environment, the launch commands, the catalog
that saves on the main process only (and keeps what it did not save for its later nodes), the
refusal of other pipelines, the settings a non-main process gets. Slow tests: two CPU processes
(gloo) train through `kedro run` in a copy of the project (one set of outputs, one MLflow run,
no process left), then the run resumes on one process; the trainer resumes across a changed
process count both ways; two processes sample, and rebalance, through `kedro run` what one
process writes, file for file, saved once.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.io import MemoryDataset
from kedro_datasets.pandas import CSVDataset

from synthmed.core import distributed
from synthmed.hooks import DistributedRunHook, MainProcessCatalog
from tests.conftest import _env, project_catalog, project_copy, run, use_toy_parameters, write_source_folder
from tests.generators.test_training import _train, run_launched

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT_S = 420
LAUNCHER_VARIABLES = (*distributed.RANK_VARIABLES, *distributed.WORLD_SIZE_VARIABLES, "LOCAL_RANK")


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch):
    """Set this process's launcher environment: ``launched(rank, world_size)``."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_rank(rank: int, world_size: int) -> None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world_size))

    return set_rank


# ---------------------------------------------------------------- rank from the environment


def test_without_a_launcher_the_process_is_the_main_and_only_one(launched):
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.is_main_process() and not distributed.is_distributed()


def test_rank_and_world_size_come_from_torchrun_or_mpi_variables(launched, monkeypatch):
    launched(1, 2)
    assert not distributed.is_main_process() and distributed.is_distributed()
    assert distributed.describe() == "process 1 of 2"
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert not distributed.is_main_process() and distributed.describe() == "process 3 of 4"


def test_a_malformed_rank_is_refused_with_the_variable_named(launched, monkeypatch):
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match=r"RANK='one' is not an integer"):
        distributed.is_main_process()


def test_the_launch_command_runs_the_training_pipeline_under_torchrun():
    one = distributed.launch_command(1, ["--namespaces", "ddpm"], python="py")
    assert one == ["py", "-m", "kedro", "run", "--pipelines", "training", "--namespaces", "ddpm"]
    two = distributed.launch_command(2, ["--pipelines", "training", "--params", "a=1"], python="py")
    assert two == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   "-m", "kedro", "run", "--pipelines", "training", "--params", "a=1"]


@pytest.mark.parametrize("args", [["--pipelines", "evaluation"], ["-p", "training,evaluation"],
                                  ["--pipelines=ingestion"]])
def test_the_launch_command_refuses_other_pipelines(args):
    with pytest.raises(ValueError, match="runs the 'training' pipeline only"):
        distributed.launch_command(2, args)
    with pytest.raises(ValueError, match="--processes must be 1 or more"):
        distributed.launch_command(0, [])


def test_the_launch_command_runs_sampling_and_rebalancing_and_refuses_the_others():
    allowed = dict(allowed=distributed.MULTI_PROCESS_PIPELINES, default=None, command="synthmed launch")
    two = distributed.launch_command(2, ["--pipelines", "sampling,rebalancing", "--namespaces", "ddpm"],
                                     python="py", **allowed)
    assert two == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "kedro",
                   "run", "--pipelines", "sampling,rebalancing", "--namespaces", "ddpm"]
    with pytest.raises(ValueError, match="rebalancing only, got --pipelines 'sampling,evaluation'"):
        distributed.launch_command(2, ["-p", "sampling,evaluation"], **allowed)
    with pytest.raises(ValueError, match="synthmed launch needs --pipelines: one or more of training, sampling"):
        distributed.launch_command(2, ["--namespaces", "ddpm"], **allowed)


@pytest.mark.parametrize(("command", "refusal"), [("train", "runs the 'training' pipeline only"),
                                                  ("launch", "runs the pipelines training, sampling, rebalancing")])
def test_synthmed_train_and_launch_refuse_the_evaluation_before_launching(tmp_path, command, refusal):
    (tmp_path / "pyproject.toml").write_text("")
    result = subprocess.run([sys.executable, "-m", "synthmed", command, "--processes", "2", "--pipelines",
                             "evaluation"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 2 and refusal in result.stderr


# ---------------------------------------------------------------- catalog and hooks


def _catalog(tmp_path: Path) -> MainProcessCatalog:
    return MainProcessCatalog({"table": CSVDataset(filepath=str(tmp_path / "table.csv")),
                               "in_memory": MemoryDataset()})


def test_the_catalog_keeps_kedros_catalog_commands():
    from kedro.framework.context import CatalogCommandsMixin

    assert issubclass(MainProcessCatalog, CatalogCommandsMixin)  # what Kedro adds to its default catalog


def test_only_the_main_process_saves_to_storage(tmp_path, launched):
    table = pd.DataFrame({"a": [1, 2]})
    launched(1, 2)
    other = _catalog(tmp_path)
    other.save("table", table)
    other.save("in_memory", 42)
    assert not (tmp_path / "table.csv").exists()  # rank 1 writes nothing
    assert other.load("in_memory") == 42  # but passes in-memory outputs on to its next node
    assert other.load("table") is table  # and the outputs it did not save: never a stale or absent file
    other.release("table")
    with pytest.raises(Exception, match="table.csv"):
        other.load("table")  # released: the stored data again (none here)
    launched(0, 2)
    _catalog(tmp_path).save("table", table)
    assert (tmp_path / "table.csv").is_file()


def test_a_multi_process_run_of_another_pipeline_is_refused(launched, monkeypatch):
    from kedro.pipeline import Node, Pipeline

    def identity(x):
        return x

    training = Pipeline([Node(identity, "a", "b", name="train_generator")])
    evaluation = Pipeline([Node(identity, "b", "c", name="evaluate")])
    import kedro.framework.project as project

    sampling = Pipeline([Node(identity, "b", "s", name="sample_generator")])
    monkeypatch.setattr(project, "pipelines", {"training": training, "sampling": sampling})
    hook = DistributedRunHook()
    launched(0, 2)
    hook.before_pipeline_run({}, training, None)  # training alone: allowed
    hook.before_pipeline_run({}, training + sampling, None)  # and sampling
    with pytest.raises(ValueError, match=r"only the pipelines 'training', 'sampling', 'rebalancing' run on several "
                                         r"processes.*1 other node\(s\): evaluate"):
        hook.before_pipeline_run({}, sampling + evaluation, None)
    launched(0, 1)
    hook.before_pipeline_run({}, training + evaluation, None)  # one process: anything runs


SETTINGS_PROBE = textwrap.dedent(
    """
    import json
    from importlib.metadata import distributions
    from synthmed import settings
    print(json.dumps({"hooks": [type(h).__name__ for h in settings.HOOKS],
                      "disabled": list(getattr(settings, "DISABLE_HOOKS_FOR_PLUGINS", ())),
                      "catalog": getattr(getattr(settings, "DATA_CATALOG_CLASS", None), "__name__", None),
                      "installed": sorted(d.metadata["Name"] for d in distributions())}))
    """
)


@pytest.mark.parametrize("rank", [0, 1])
def test_a_non_main_process_gets_only_the_hooks_that_read(rank):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    result = subprocess.run([sys.executable, "-c", SETTINGS_PROBE], capture_output=True, text=True, timeout=120,
                            env={**env, "PYTHONPATH": str(ROOT / "src"), "RANK": str(rank), "WORLD_SIZE": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    writers = {"RunLockHook", "StagingHook", "MlflowRunGuard", "ReportingArtifactsHook", "ModelRegistryHook",
               "StudiesIndexHook"}
    if rank == 0:
        assert writers <= set(probe["hooks"]) and probe["disabled"] == [] and probe["catalog"] is None
    else:
        assert probe["catalog"] == "MainProcessCatalog"
        assert not writers & set(probe["hooks"]) and "DistributedRunHook" in probe["hooks"]
        # Kedro matches the distribution's name exactly: a misspelt one would leave kedro-mlflow on.
        assert "kedro_mlflow" in probe["disabled"]
        assert set(probe["disabled"]) <= set(probe["installed"])


# ---------------------------------------------------------------- the trainer across process counts

RESUME = textwrap.dedent(
    """
    import logging
    import sys
    from pathlib import Path
    import torch
    sys.path.insert(0, {root!r})
    logging.basicConfig(level=logging.INFO)
    from accelerate import PartialState
    from tests.generators.test_training import _train
    root, steps = Path(sys.argv[1]), int(sys.argv[2])
    models, history = _train(root, steps=steps, checkpoint_every=2, log_every=2)
    rank = PartialState().process_index
    torch.save({{k: v.clone() for k, v in models.state_dict().items()}}, root.parent / f"weights-{{rank}}.pt")
    print("steps", [r["step"] for r in history])
    """
)


def _torchrun(script: Path, *args: str) -> str:
    code, log = run_launched([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              str(script), *args], timeout=LAUNCH_TIMEOUT_S, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert code == 0, log[-3000:]
    return log


@pytest.mark.slow
def test_the_trainer_resumes_on_another_number_of_processes(tmp_path, caplog):
    """1 process to step 4, then 2 processes to step 8 from that checkpoint; and 2 -> 1."""
    from synthmed.generators.training import latest_verified_checkpoint

    script = tmp_path / "resume.py"
    script.write_text(RESUME.format(root=str(ROOT)))

    one_first = tmp_path / "one_then_two" / "checkpoints"
    _train(one_first, steps=4, checkpoint_every=2, log_every=2)
    log = _torchrun(script, str(one_first), "8")
    assert "(step 4 of 8) on 2 process(es); the checkpoint was written by 1" in log
    first = torch.load(one_first.parent / "weights-0.pt", weights_only=True)
    second = torch.load(one_first.parent / "weights-1.pt", weights_only=True)
    trainable = [k for k in first if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(first[k], second[k]) for k in trainable)  # one model on both processes
    assert latest_verified_checkpoint(one_first).name == f"step-{8:09d}"
    assert "steps [2, 4, 6, 8]" in log  # the 1-process records kept, the 2-process ones added

    two_first = tmp_path / "two_then_one" / "checkpoints"
    _torchrun(script, str(two_first), "4")
    with caplog.at_level("INFO", logger="synthmed.generators.training"):
        _, history = _train(two_first, steps=8, checkpoint_every=2, log_every=2)
    assert "(step 4 of 8) on 1 process(es); the checkpoint was written by 2" in caplog.text
    assert [r["step"] for r in history] == [2, 4, 6, 8]  # the records of the 2-process part are kept
    assert latest_verified_checkpoint(two_first).name == f"step-{8:09d}"


# ---------------------------------------------------------------- through kedro run

FAMILIES = ("dcgan", "pix2pix")  # two families: one process group serves both trainings


def _synthmed_train(project: Path, processes: int) -> tuple[int, str]:
    """``synthmed train --processes N`` in ``project``; every process it started is killed at the end."""
    params = ",".join(f"{f}.training.steps=4,{f}.training.checkpoint_every=2,{f}.training.log_every=2,"
                      f"{f}.training.batch_size=2" for f in FAMILIES)
    return run_launched([str(Path(sys.executable).with_name("synthmed")), "train", "--processes", str(processes),
                         "--namespaces", ",".join(FAMILIES), "--params", params],
                        timeout=LAUNCH_TIMEOUT_S, cwd=project, env=_env(OMP_NUM_THREADS="1", COLUMNS="1000"))


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder`` (a rank left behind would be one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _mlflow_runs(project: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute("select run_uuid, status from runs").fetchall()


def _project_with_model_inputs(tmp_path: Path) -> Path:
    """A copy of the project with the training inputs written where its catalog reads them
    (the data pipelines in-process: faster than `kedro run`)."""
    from synthmed.pipelines import extraction, ingestion, preprocessing

    project = project_copy(tmp_path / "project").resolve()
    use_toy_parameters(project)  # the Kedro runs read conf/test: the toy folder's classes
    write_source_folder(tmp_path / "source")
    catalog = project_catalog(project, tmp_path / "source", overrides={"ingestion": {"max_rejection_rate": 0.5}})
    run(ingestion.create_pipeline() + preprocessing.create_pipeline() + extraction.create_pipeline(), catalog)
    return project


@pytest.mark.slow
def test_two_processes_train_through_kedro_then_one_process_resumes(tmp_path):
    from synthmed.core.checksums import sha256_file
    from synthmed.generators.common import verify_checksums

    project = _project_with_model_inputs(tmp_path)
    code, log = _synthmed_train(project, 2)
    assert code == 0, log[-4000:]
    assert "Running on 2 processes; this is process 0 of 2 (the main process" in log
    assert "this is process 1 of 2 (it trains or takes its share" in log
    for family in FAMILIES:  # Kedro logs each save: one process saved
        assert log.count(f"Saving data to {family}.generator ") == 1, log[-4000:]
    assert _processes_in(project) == []
    models = project / "data/06_models"
    for family in FAMILIES:
        verify_checksums(models / family)  # written once, completely
        (run_dir,) = (models / "checkpoints").glob(f"{family}-*")
        assert [p.name for p in run_dir.iterdir()] == [f"step-{4:09d}"]  # no second writer's leftovers
        history = pd.read_csv(project / f"data/08_reporting/training/{family}_history.csv")
        assert history["step"].tolist() == [2, 4]
    runs = _mlflow_runs(project)
    assert len(runs) == 1 and runs[0][1] == "FINISHED"  # one MLflow run, not one per process
    with sqlite3.connect(project / "mlflow.db") as db:
        logged = db.execute("select key, step, count(*) from metrics where key like 'dcgan.%' "
                            "group by key, step").fetchall()
    assert logged and all(count == 1 for _, _, count in logged)  # each metric once per step
    weights = {f: sha256_file(next((models / f).glob("*.safetensors"))) for f in FAMILIES}

    # The run stopped after its last checkpoint; the model folder is gone: one process takes over.
    for family in FAMILIES:
        for path in (models / family).iterdir():
            path.unlink()
        (models / family).rmdir()
    code, log = _synthmed_train(project, 1)
    assert code == 0, log[-4000:]
    for family in FAMILIES:
        assert f"Resuming {family} training from" in log
        assert "on 1 process(es); the checkpoint was written by 2" in log
        verify_checksums(models / family)
        assert sha256_file(next((models / family).glob("*.safetensors"))) == weights[family]
    assert len(_mlflow_runs(project)) == 2
    assert _processes_in(project) == []


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_an_fsdp_or_deepspeed_accelerate_config_is_refused(monkeypatch, variable):
    from synthmed.generators.training import TrainingConfig, _accelerator

    monkeypatch.setenv(variable, "true")
    with pytest.raises(ValueError, match=f"{variable} is set .*data-parallel \\(DDP\\) only"):
        _accelerator(TrainingConfig(steps=1, batch_size=1))


def test_more_processes_than_gpus_are_refused(monkeypatch):
    from synthmed.generators.training import TrainingConfig, _accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"2 processes on this machine \(LOCAL_WORLD_SIZE\) but 1 CUDA device"):
        _accelerator(TrainingConfig(steps=1, batch_size=1))


# ---------------------------------------------------------------- sampling through kedro run

SAMPLED = ("arrays", "provenance.csv", "png", "checkpoints")  # under data/07_model_output/<family>


def _synthmed(project: Path, *args: str) -> str:
    """``synthmed ARGS`` in ``project`` (hard timeout, every process it started killed); its output."""
    code, log = run_launched([str(Path(sys.executable).with_name("synthmed")), *args], timeout=LAUNCH_TIMEOUT_S,
                             cwd=project, env=_env(OMP_NUM_THREADS="1", COLUMNS="1000"))
    assert code == 0, log[-4000:]
    return log


def _digests(folder: Path) -> dict[str, str]:
    from synthmed.core.checksums import sha256_file

    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_two_processes_sample_through_kedro_what_one_process_samples(tmp_path):
    """`synthmed launch --processes 2 --pipelines sampling`: the outputs of a 1-process run, saved once."""
    project = _project_with_model_inputs(tmp_path)
    family = "dcgan"  # 3 classes x 32 images in batches of 32: 3 batches on 2 processes (2 and 1)
    _synthmed(project, "train", "--namespaces", family, "--params",
              f"{family}.training.steps=2,{family}.training.checkpoint_every=2,{family}.training.batch_size=2")
    outputs = project / "data/07_model_output" / family

    _synthmed(project, "launch", "--processes", "1", "--pipelines", "sampling", "--namespaces", family)
    one = _digests(outputs)
    assert {k.split("/")[0] for k in one} == set(SAMPLED) and len(one) > 96
    for path in SAMPLED:
        target = outputs / path
        target.unlink() if target.is_file() else shutil.rmtree(target)

    log = _synthmed(project, "launch", "--processes", "2", "--pipelines", "sampling", "--namespaces", family)
    assert "Running on 2 processes; this is process 1 of 2" in log
    assert f"sampling {family} (one forward pass) on process 1 of 2" in log  # the second process drew its share
    for dataset in ("samples", "sample_provenance", "sample_pngs", "sampled_grid", "checkpoint_samples"):
        assert log.count(f"Saving data to {family}.{dataset} ") == 1, log[-4000:]
    assert _digests(outputs) == one  # arrays, provenance and PNGs of one process, byte for byte
    assert _processes_in(project) == []
    assert len(_mlflow_runs(project)) == 3  # training, then one per sampling run (not one per process)


@pytest.mark.slow
def test_two_processes_rebalance_through_kedro_what_one_process_publishes(tmp_path):
    """`synthmed launch --processes 2 --pipelines rebalancing --env test`: sampling and the gate split,
    the published folder of a 1-process run, written once."""
    from synthmed.pipelines import extraction, feature_encoders, ingestion, preprocessing, training

    project = project_copy(tmp_path / "project").resolve()
    use_toy_parameters(project)  # the Kedro runs read conf/test: the toy folder's classes
    write_source_folder(tmp_path / "source")
    checkpoints = {"run": {"checkpoint_root": str(project / "data/06_models/checkpoints")}}
    catalog = project_catalog(project, tmp_path / "source", overrides={
        "ingestion": {"max_rejection_rate": 0.5}, **{family: checkpoints for family in ("ddpm", "pix2pix", "dcgan")}})
    run(ingestion.create_pipeline() + preprocessing.create_pipeline() + extraction.create_pipeline()
        + training.create_pipeline() + feature_encoders.create_pipeline(), catalog)
    published = project / "data/07_model_output/rebalanced"

    # batches of 2: each round's few candidates are split (the gate's queries, fewer than one chunk, are not)
    options = ["--pipelines", "rebalancing", "--env", "test", "--params", "rebalancing.batch_size=2"]
    _synthmed(project, "launch", "--processes", "1", *options)
    one = _digests(published)
    shutil.rmtree(published)
    log = _synthmed(project, "launch", "--processes", "2", *options)
    assert "Running on 2 processes; this is process 1 of 2" in log
    assert "steps) on process 1 of 2" in log  # the second process sampled its share
    assert log.count("Saving data to rebalanced_dataset ") == 1, log[-4000:]
    two = _digests(published)
    assert two.keys() == one.keys() and len(one) > 5
    differ = sorted(k for k in one if one[k] != two[k])
    assert differ == [], differ
    assert _processes_in(project) == []
