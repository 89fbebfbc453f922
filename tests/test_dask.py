"""The data stages on Dask: `ordered_map` on a cluster, and `kedro run --runner synthmed.runners.DaskRunner`.

Both must give what the local path gives, in the same order and byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from synthmed.core import parallel
from tests.conftest import project_copy, sh

distributed = pytest.importorskip("distributed")


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
    local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
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
        with distributed.Client(cluster.scheduler_address) as client:
            worker_pids = set(client.run(os.getpid).values())
    finally:
        for client in parallel._clients.values():
            client.close()
        parallel._clients.clear()
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
def test_kedro_run_with_the_dask_runner_writes_the_sequential_runs_bytes(tmp_path, monkeypatch, hard_timeout):
    hard_timeout(600)
    project = project_copy(tmp_path / "project")
    sh("kedro", "run", "--pipelines", "sample_data", cwd=project, timeout=300)
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
