"""Per-file work on every core: an ordered map over a process pool, failures as values.

Ingestion and de-identification do the same thing to thousands of independent files, so
the nodes run their per-file function in a pool of worker processes (not Kedro's
``ParallelRunner``, which runs whole nodes in parallel and so can use at most as many cores
as there are independent nodes, three readers here). Dask is the engine beyond one machine
(below), off by default. ``ordered_map`` keeps at most a few tasks per worker in flight, so the memory of the
parent stays flat in the number of files, and it yields results in the order of the jobs,
so every output is the same whatever the number of workers.

An exception raised by the function for one job is yielded as that job's value (the
caller turns it into a rejected row); it never stops the other jobs. Arguments and
results cross process boundaries by pickling: keep them small (paths, not arrays).

Beyond one machine, the same map runs on a Dask distributed cluster (off by default): set
``SYNTHMED_DASK_SCHEDULER`` to a scheduler's address (``tcp://host:8786``) or to ``local:N``
(a ``LocalCluster`` of N single-threaded worker processes started on first use). The batches,
the in-flight bound and the order are the same, so the outputs are the same byte for byte.
Inside a task of a Dask worker (a node run by ``synthmed.runners.DaskRunner``), where a
process pool cannot start (the worker is a daemon process), the batches go to the same
cluster through ``distributed.worker_client``. Paths in the jobs must mean the same on every
worker: on a real cluster the project's data and ``TMPDIR`` are on a shared filesystem.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)
# Tasks queued per worker: enough to keep every worker busy, few enough to bound memory.
_IN_FLIGHT_PER_WORKER = 4
DASK_SCHEDULER_ENV = "SYNTHMED_DASK_SCHEDULER"
_LOCAL_PREFIX = "local:"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        return max(1, os.process_cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None, n_jobs: int) -> int:
    """``workers`` (None: `available_cores`), never more than the number of jobs, at least 1."""
    wanted = available_cores() if workers is None else workers
    return max(1, min(wanted, n_jobs))


def chunk_size(n_jobs: int, workers: int) -> int:
    """Jobs per task: up to 16, fewer when there are not enough to give each worker 8 tasks."""
    return max(1, min(16, n_jobs // (max(1, workers) * 8)))


def _context() -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds with the parent's modules already imported;
    # spawn would re-import numpy, pydicom and pandas in every worker (about a second each).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def ordered_map(fn: Callable[..., T], jobs: Iterable[tuple[Any, ...]], workers: int,
                chunk: int = 1) -> Iterator[T | Exception]:
    """``fn(*job)`` for every job, in job order; an exception is yielded, not raised.

    Args:
        fn: a module-level function (picklable).
        jobs: argument tuples; consumed lazily.
        workers: 1 runs in this process (no pool); more starts that many worker processes, or
            uses the Dask cluster when one is configured (then the cluster's size sets the pace).
        chunk: jobs sent to a worker at a time. Each task costs the parent about a
            millisecond of pickling and queue handling, as much as a small file's work:
            a few jobs per task keep the parent's share small, so the speed-up grows with
            the workers.
    """
    if workers <= 1:
        for job in jobs:
            try:
                yield fn(*job)
            except Exception as exc:  # noqa: BLE001 - the caller records it against its job
                yield exc
        return
    if in_dask_worker() or dask_scheduler():
        yield from _dask_map(fn, jobs, chunk)
        return
    pending: deque[tuple[Future, int]] = deque()
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
        for batch in _batches(jobs, chunk):
            pending.append((pool.submit(_run_batch, fn, batch), len(batch)))
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                yield from _outcomes(*pending.popleft())
        while pending:
            yield from _outcomes(*pending.popleft())


def dask_scheduler() -> str | None:
    """The scheduler ``SYNTHMED_DASK_SCHEDULER`` names (an address or ``local:N``), None when unset."""
    value = os.environ.get(DASK_SCHEDULER_ENV, "").strip()
    return value or None


def in_dask_worker() -> bool:
    """Whether this code runs inside a task on a Dask worker."""
    if "distributed" not in sys.modules:  # never imported: certainly not a worker (and no import cost)
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def local_cluster_size(scheduler: str) -> int | None:
    """N for ``local:N``, None for a scheduler address; a malformed ``local:`` value is an error."""
    if not scheduler.startswith(_LOCAL_PREFIX):
        return None
    count = scheduler[len(_LOCAL_PREFIX):]
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{DASK_SCHEDULER_ENV}={scheduler!r}: expected 'local:N' with N a positive number of "
                         "workers (e.g. 'local:4'), or a scheduler address such as 'tcp://host:8786'.")
    return int(count)


def connect_dask(scheduler: str) -> Any:
    """A ``distributed.Client`` for ``scheduler``: a new ``LocalCluster`` for ``local:N`` (closed with
    the client), else the running scheduler at that address."""
    from distributed import Client, LocalCluster

    workers = local_cluster_size(scheduler)
    if workers is None:
        logger.info("Connecting to the Dask scheduler at %s", scheduler)
        return Client(scheduler)
    logger.info("Starting a local Dask cluster of %d worker process(es)", workers)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster)


def close_dask(client: Any) -> None:
    """Close a client from `connect_dask`, and the local cluster it started (its processes would
    otherwise run until this process exits)."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


_clients: dict[str, Any] = {}


def _shared_client(scheduler: str) -> Any:
    """One client per scheduler for this process: a local cluster takes seconds to start, and a
    node may map more than once."""
    client = _clients.get(scheduler)
    if client is None or client.status in ("closed", "closing"):
        client = _clients[scheduler] = connect_dask(scheduler)
        atexit.register(close_dask, client)
    return client


def close_dask_clients() -> None:
    """Close the clients `ordered_map` opened (and the local clusters they started); also done at exit."""
    while _clients:
        _, client = _clients.popitem()
        close_dask(client)


def _dask_map(fn: Callable[..., T], jobs: Iterable[tuple[Any, ...]], chunk: int) -> Iterator[T | Exception]:
    """`ordered_map` on a Dask cluster: same batches, in-flight bound per worker thread and order."""
    if in_dask_worker():
        from distributed import worker_client

        # Secedes from the worker's thread pool while waiting, so the batches can use this worker too.
        session: Any = worker_client()
    else:
        session = contextlib.nullcontext(_shared_client(dask_scheduler() or ""))
    with session as client:
        threads = max(1, sum(client.nthreads().values()))
        pending: deque[tuple[Any, int]] = deque()
        for batch in _batches(jobs, chunk):
            # pure=False: two batches with equal arguments are still two tasks (the work writes files).
            pending.append((client.submit(_run_batch, fn, batch, pure=False), len(batch)))
            if len(pending) >= threads * _IN_FLIGHT_PER_WORKER:
                yield from _outcomes(*pending.popleft())
        while pending:
            yield from _outcomes(*pending.popleft())


def _batches(jobs: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for job in jobs:
        batch.append(job)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run_batch(fn: Callable[..., T], batch: list[tuple[Any, ...]]) -> list[T | Exception]:
    """In a worker: ``fn`` over a batch, each failure kept as that job's result."""
    results: list[T | Exception] = []
    for job in batch:
        try:
            results.append(fn(*job))
        except Exception as exc:  # noqa: BLE001 - the caller records it against its job
            results.append(_picklable(exc))
    return results


def _picklable(exc: Exception) -> Exception:
    """``exc``, or a RuntimeError with its class and text if it cannot cross back to the parent."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - e.g. an exception class whose __init__ takes other arguments
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _outcomes(future: Future | Any, n_jobs: int) -> list[Any]:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - the worker died (BrokenProcessPool, KilledWorker) or a result did not pickle
        return [exc] * n_jobs


class SpilledFile:
    """A finished file that a worker wrote into a `SpillFolder`, handed to the dataset that saves it.

    ``FileFolderDataset`` moves it into place (a rename when the spill folder and the dataset
    are on one filesystem) instead of reading its bytes and writing them again: the parent
    process, the one serial part of a parallel pass, then touches each file once (its checksum)
    and not three times. Called, it returns the bytes, like the loaders other nodes hand over.
    """

    def __init__(self, path: str | Path, spill: SpillFolder) -> None:
        self.path = Path(path)
        self._spill = spill  # keeps the folder alive until the file is saved

    def __call__(self) -> bytes:
        return self.path.read_bytes()

    def move_to(self, target: Path) -> None:
        """Move the file to ``target`` (its folder must exist); it leaves the spill folder."""
        shutil.move(self.path, target)


SPILL_ROOT_VARIABLE = "SYNTHMED_SPILL_ROOT"


class SpillFolder:
    """A temporary folder for per-file results, removed when nothing refers to it any more.

    Workers write what they decoded or de-identified here (on disk, not in memory) and the
    node hands loaders that read it back to the dataset that saves it, so memory stays flat
    in the number of files. The folder is in the system's temporary folder (``TMPDIR``) and
    holds at most about one copy of the data being ingested. Kedro deep-copies node outputs
    held in memory: a copy is this same folder.

    Under a runner that runs nodes in other processes (Kedro's ``ParallelRunner``), a node's
    outputs are pickled to the process of the node that reads them, and the process that made
    the folder would remove it as soon as its node's copy is gone. There ``SpillRunHook`` sets
    ``SYNTHMED_SPILL_ROOT`` to a folder of the run: folders are made inside it, belong to the
    run (no removal when an object goes; `remove` still removes one) and the hook removes the
    root when the run ends, failed or not.
    """

    def __init__(self, prefix: str) -> None:
        root = os.environ.get(SPILL_ROOT_VARIABLE)
        if root:
            Path(root).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=root or None))
        self._cleanup = None if root else weakref.finalize(self, shutil.rmtree, str(self.path), ignore_errors=True)

    def __deepcopy__(self, memo: dict) -> SpillFolder:
        return self

    def __reduce__(self) -> tuple:
        if self._cleanup is not None:
            raise pickle.PicklingError(
                f"A spill folder ({self.path}) removed when its process lets it go cannot be sent to another "
                f"process: run with {SPILL_ROOT_VARIABLE} set (SpillRunHook sets it under multi-process runners).")
        return _run_spill_folder, (str(self.path),)

    def remove(self) -> None:
        """Remove the folder now (also done when the last reference goes, or at exit, or with its run)."""
        if self._cleanup is not None:
            self._cleanup()
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def _run_spill_folder(path: str) -> SpillFolder:
    """A spill folder of the run, received from another process (no removal when it goes)."""
    folder = SpillFolder.__new__(SpillFolder)
    folder.path, folder._cleanup = Path(path), None
    return folder
