"""synthmed.core.parallel: ordered results from a process pool, failures as values."""

from __future__ import annotations

import os
import time

import pytest

from synthmed.core import parallel


def _slow_square(n: int) -> int:
    """Later jobs finish first (module level: picklable)."""
    time.sleep(0.02 * (5 - n % 5))
    if n == 7:
        raise ValueError(f"job {n} failed")
    return n * n


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_in_job_order_and_a_failure_is_a_value(workers):
    results = list(parallel.ordered_map(_slow_square, ((n,) for n in range(12)), workers))
    assert [r for i, r in enumerate(results) if i != 7] == [n * n for n in range(12) if n != 7]
    assert isinstance(results[7], ValueError) and str(results[7]) == "job 7 failed"


def test_workers_default_to_the_cores_this_process_may_use(monkeypatch):
    if hasattr(os, "process_cpu_count"):
        monkeypatch.setattr(os, "process_cpu_count", lambda: 3)
    else:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 4, 5})
    assert parallel.available_cores() == 3
    assert parallel.resolve_workers(None, 100) == 3
    assert parallel.resolve_workers(8, 2) == 2  # never more processes than files
    assert parallel.resolve_workers(None, 0) == 1


class _OddError(Exception):
    """An exception that cannot be unpickled (its __init__ takes two arguments)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")


def _odd(n: int) -> int:
    if n == 5:
        raise _OddError("odd", "five")
    return n


def test_batches_keep_order_and_failures_that_cannot_be_pickled_stay_with_their_job():
    results = list(parallel.ordered_map(_odd, ((n,) for n in range(11)), workers=2, chunk=4))
    assert results[:5] + results[6:] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    # Wrapped as "<class>: <message>"; or, once `distributed` has been imported in this process
    # (tests/test_dask.py), tblib's pickling support carries the exception itself.
    failure = results[5]
    assert (isinstance(failure, RuntimeError) and str(failure) == "_OddError: odd: five") or (
        type(failure).__name__ == "_OddError" and str(failure) == "odd: five"), repr(failure)
    assert parallel.chunk_size(400, 2) == 16 and parallel.chunk_size(20, 2) == 1


# ----------------------------------------------------------------- spill folders across processes


def _spill_in_a_worker(text: str) -> tuple[parallel.SpillFolder, str]:
    """What an ingestion node does in a ParallelRunner worker: spill a file, return the folder."""
    spill = parallel.SpillFolder("test-spill-")
    path = spill.path / "item.txt"
    path.write_text(text)
    return spill, str(path)


def test_a_spill_folder_of_the_run_outlives_the_worker_process_that_made_it(tmp_path, monkeypatch) -> None:
    import gc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    monkeypatch.setenv(parallel.SPILL_ROOT_VARIABLE, str(tmp_path / "run"))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        spill, path = pool.submit(_spill_in_a_worker, "pixels").result()
    gc.collect()  # the worker is gone, and its objects with it
    assert spill.path.parent == tmp_path / "run"
    assert open(path).read() == "pixels"
    spill.remove()
    assert not spill.path.exists()


def test_a_spill_folder_of_its_process_is_removed_with_it_and_refuses_to_travel(monkeypatch) -> None:
    import gc
    import pickle

    monkeypatch.delenv(parallel.SPILL_ROOT_VARIABLE, raising=False)
    spill, path = _spill_in_a_worker("pixels")
    folder = spill.path
    with pytest.raises(pickle.PicklingError, match=parallel.SPILL_ROOT_VARIABLE):
        pickle.dumps(spill)
    del spill
    gc.collect()
    assert not folder.exists()
