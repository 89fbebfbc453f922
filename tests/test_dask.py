"""The data stages on Dask: `ordered_map` on a cluster, and `kedro run --runner synthmed.runners.DaskRunner`.

Both must give what the local path gives, in the same order and byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
from kedro.framework.hooks import hook_impl
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from synthmed.core import parallel
from synthmed.runners import DaskRunner
from tests.conftest import project_copy, sh


def _distributed():
    # Imported by the tests that use it, not at collection: importing distributed installs tblib's
    # pickling of every exception class for the whole process, which other test files must not see.
    return pytest.importorskip("distributed")


def _slow_square(n: int) -> tuple[int, int]:
    """Later jobs finish first; job 7 fails (module level: the workers import it by name)."""
    time.sleep(0.01 * (5 - n % 5))
    if n == 7:
        raise ValueError(f"job {n} failed")
    return n * n, os.getpid()


@pytest.fixture
def hard_timeout():
    """Fails the test, instead of hanging the suite, if it runs past the given seconds."""
    def _expired(signum, frame):
        raise TimeoutError("test_dask: the test ran past its hard timeout")

    previous = signal.signal(signal.SIGALRM, _expired)
    yield signal.alarm
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def cluster(hard_timeout):
    hard_timeout(120)
    local = _distributed().LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        yield local
    finally:
        local.close(timeout=30)


def test_ordered_map_on_dask_equals_the_local_pool_in_order_with_failures_as_values(cluster, monkeypatch):
    jobs = [(n,) for n in range(40)]
    local = list(parallel.ordered_map(_slow_square, jobs, workers=2, chunk=3))
    monkeypatch.setenv(parallel.DASK_SCHEDULER_ENV, cluster.scheduler_address)
    try:
        on_dask = list(parallel.ordered_map(_slow_square, jobs, workers=2, chunk=3))
        with _distributed().Client(cluster.scheduler_address) as client:
            worker_pids = set(client.run(os.getpid).values())
    finally:
        parallel.close_dask_clients()
    values = [r if isinstance(r, Exception) else r[0] for r in on_dask]
    assert [v for i, v in enumerate(values) if i != 7] == [n * n for n in range(40) if n != 7]
    assert [v for i, v in enumerate(values) if i != 7] == [r[0] for i, r in enumerate(local) if i != 7]
    assert isinstance(values[7], ValueError) and str(values[7]) == "job 7 failed"
    # The jobs ran on both of the cluster's workers, not in a pool of this process.
    assert {r[1] for r in on_dask if not isinstance(r, Exception)} == worker_pids
    assert len(worker_pids) == 2


def test_a_malformed_local_cluster_size_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(parallel.DASK_SCHEDULER_ENV, "local:zero")
    with pytest.raises(ValueError, match=r"SYNTHMED_DASK_SCHEDULER='local:zero': expected 'local:N'"):
        list(parallel.ordered_map(_slow_square, [(1,), (2,)], workers=2))


def test_without_a_scheduler_nothing_imports_distributed():
    code = ("import sys; from synthmed.core import parallel; "
            "list(parallel.ordered_map(abs, [(-1,)], workers=1)); assert 'distributed' not in sys.modules")
    sh(sys.executable, "-c", code, cwd=Path.cwd())


def _digests(root: Path, folders: tuple[str, ...]) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted((root / folder).rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_kedro_run_on_dask_and_on_parallel_runner_writes_the_sequential_runs_bytes(tmp_path, monkeypatch,
                                                                                  hard_timeout):
    hard_timeout(900)
    project = project_copy(tmp_path / "project")
    sh("kedro", "run", "--pipelines", "sample_cohort", "--params", "sample_cohort.n_subjects=4", cwd=project,
       timeout=300)
    run = ["kedro", "run", "--pipelines", "ingestion,preprocessing"]
    sh(*run, cwd=project, timeout=300)
    folders = ("data/02_intermediate", "data/03_primary")
    sequential = _digests(project, folders)
    assert len(sequential) > 10
    sh("git", "clean", "-fdxq", *folders, cwd=project)  # the outputs go, the tracked .gitignore files stay
    assert len(_digests(project, folders)) < 5
    monkeypatch.setenv(parallel.DASK_SCHEDULER_ENV, "local:2")
    result = sh(*run, "--runner", "synthmed.runners.DaskRunner", cwd=project, timeout=300)
    assert "on the Dask cluster" in result.stdout + result.stderr
    assert _digests(project, folders) == sequential
    # Kedro's ParallelRunner: nodes in worker processes, whose outputs (with ingestion's spill
    # folders) are read by nodes in other processes (synthmed.hooks.SpillRunHook).
    sh("git", "clean", "-fdxq", *folders, cwd=project)
    monkeypatch.delenv(parallel.DASK_SCHEDULER_ENV)
    result = sh(*run, "--runner", "ParallelRunner", cwd=project, timeout=300)
    found = re.search(r"synthmed-run-spill-\w+", result.stdout + result.stderr)  # the log line may wrap
    assert found, "the run did not give its spill folders to the run"
    assert _digests(project, folders) == sequential
    assert not (Path(tempfile.gettempdir()) / found.group(0)).exists()  # removed with the run


def _scale(numbers: list[int], factor: int) -> list[int]:
    return [n * factor for n in numbers]


def _where(numbers: list[int]) -> tuple[list[int], int]:
    return numbers, os.getpid()


def _summary(numbers: list[int]) -> dict[str, float]:
    return {"total": float(sum(numbers))}


class _LogsToMlflow(MemoryDataset):
    """Stands for MetricsDataset: a node writing it must run in the driver."""

    def _log_to_mlflow(self, metrics: dict[str, float]) -> None:
        """Never called here: its presence is what the runner looks for."""


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    @hook_impl
    def before_node_run(self, node, inputs) -> None:
        self.calls.append(("before", node.name, os.getpid()))
        # Remote nodes: their parameters only; a node run in the driver: all its inputs, as Kedro gives them.
        assert inputs == {"double": {"params:factor": 2}, "where": {}, "summarise": {"kept": [2, 4, 6]}}[node.name]

    @hook_impl
    def after_node_run(self, node) -> None:
        self.calls.append(("after", node.name, os.getpid()))

    @hook_impl
    def after_dataset_saved(self, dataset_name) -> None:
        self.calls.append(("saved", dataset_name, os.getpid()))


def test_the_dask_runner_runs_nodes_on_workers_and_hooks_in_the_driver(cluster):
    pipeline = Pipeline([
        node(_scale, ["numbers", "params:factor"], "doubled", name="double"),
        node(_where, "doubled", ["kept", "pid"], name="where"),
        node(_summary, "kept", "summary", name="summarise"),
    ])
    summary = _LogsToMlflow()
    catalog = DataCatalog({"numbers": MemoryDataset([1, 2, 3]), "params:factor": MemoryDataset(2),
                           "summary": summary})
    recorder = _Recorder()
    hooks = _create_hook_manager()
    hooks.register(recorder)
    DaskRunner(scheduler=cluster.scheduler_address).run(pipeline, catalog, hooks)
    assert summary.load() == {"total": 12.0}  # ran in the driver, on the workers' in-memory results
    assert catalog.load("pid") != os.getpid()  # a free output came back from the worker that made it
    order = [(kind, name) for kind, name, _ in recorder.calls]
    assert order.index(("before", "double")) < order.index(("after", "double")) < order.index(("before", "where"))
    assert ("saved", "doubled") in order and ("after", "summarise") in order
    assert {pid for *_, pid in recorder.calls} == {os.getpid()}  # every hook ran in the driver
