"""Kedro runners beyond one process: ``DaskRunner`` runs each node as a task on a Dask cluster.

    SYNTHMED_DASK_SCHEDULER=tcp://scheduler:8786 kedro run --runner synthmed.runners.DaskRunner
    SYNTHMED_DASK_SCHEDULER=local:4 kedro run --runner synthmed.runners.DaskRunner   # 4 local workers

This follows Kedro's documented Dask deployment pattern (a runner that submits every node to a
``distributed.Client`` once the nodes it depends on are done), adapted to this project:

- The scheduler comes from ``SYNTHMED_DASK_SCHEDULER`` (or ``--runner-params scheduler=...``);
  unset, a local cluster with one single-threaded worker process per available core is started
  for the run and closed after it.
- Node hooks run in the driver (the ``kedro run`` process), around the remote task: the
  project's hooks keep run-wide state there (staging, the pseudonymisation key check, the
  MLflow run), which copies on the workers would not share. ``before_node_run`` receives the
  node's parameters only (input overrides it returns are not applied), ``after_node_run`` no
  outputs, and ``after_dataset_saved`` is called in the driver with ``data=None`` for each
  output the worker saved; the other dataset hooks are not called for remote nodes.
- A node with an output that logs to the driver's MLflow run (``synthmed.datasets.MetricsDataset``,
  kedro-mlflow's datasets) runs in the driver, as under ``SequentialRunner``: such nodes are
  small summaries, and a worker has no active MLflow run.
- In-memory datasets between nodes travel as the results of Dask tasks (worker to worker); the
  catalog, with the pseudonymisation key, is sent to the workers that run nodes needing it.
- Inside a node on a worker, ``synthmed.core.parallel.ordered_map`` sends its per-file batches to
  the same cluster, so ingestion's file pass spreads over every worker, not one.

On a real cluster the workers must see the project (the package installed, ``data/`` and
``TMPDIR`` on a shared filesystem at the same paths), as for any Kedro run with file datasets.
The outputs are the same, byte for byte, as a ``SequentialRunner`` run's.
"""

from __future__ import annotations

from collections import Counter
from itertools import chain
from typing import Any

from kedro.framework.hooks.manager import _NullPluginManager
from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import AbstractRunner
from kedro.runner.task import Task

from synthmed.core.catalog import replace_dataset
from synthmed.core.parallel import available_cores, close_dask, connect_dask, dask_scheduler, local_cluster_size


def _run_remote(node: Any, catalog: Any, is_async: bool, run_id: str | None, *upstream: dict[str, Any]) -> dict:
    """On a worker: the node with its in-memory inputs from ``upstream``; returns its in-memory outputs."""
    for produced in upstream:
        for name, value in produced.items():
            if name in node.inputs:
                replace_dataset(catalog, name, MemoryDataset(value, copy_mode="assign"))
    for name in node.outputs:
        if _is_memory(catalog, name):
            replace_dataset(catalog, name, MemoryDataset(copy_mode="assign"))
    Task(node=node, catalog=catalog, hook_manager=_NullPluginManager(), is_async=is_async, run_id=run_id).execute()
    return {name: catalog.load(name) for name in node.outputs if _is_memory(catalog, name)}


def _is_memory(catalog: Any, name: str) -> bool:
    return isinstance(catalog.get(name, fallback_to_runtime_pattern=True), MemoryDataset)


def _logs_to_mlflow(dataset: Any) -> bool:
    # Duck-typed: MetricsDataset logs through `_log_to_mlflow`; kedro-mlflow's datasets live in its package.
    return hasattr(dataset, "_log_to_mlflow") or type(dataset).__module__.startswith("kedro_mlflow")


class DaskRunner(AbstractRunner):
    """Runs the pipeline's nodes as tasks on a Dask distributed cluster (see the module docstring)."""

    def __init__(self, is_async: bool = False, scheduler: str | None = None) -> None:
        """
        Args:
            is_async: load and save a node's datasets with threads (as Kedro's runners).
            scheduler: a scheduler address or ``local:N``; default ``SYNTHMED_DASK_SCHEDULER``, else
                ``local:<available cores>``.
        """
        super().__init__(is_async=is_async)
        self._scheduler = scheduler or dask_scheduler() or f"local:{available_cores()}"
        local_cluster_size(self._scheduler)  # a malformed local:N stops the run here, before any node

    def _get_executor(self, max_workers: int) -> None:
        return None  # nodes go to the Dask client, not a concurrent.futures executor

    def _run(self, pipeline: Pipeline, catalog: Any, hook_manager: Any = None, run_id: str | None = None) -> None:
        from distributed import wait

        hook_manager = hook_manager or _NullPluginManager()
        nodes = pipeline.nodes
        dependencies = pipeline.node_dependencies
        producers = {name: node for node in nodes for name in node.outputs}
        load_counts = Counter(chain.from_iterable(n.inputs for n in nodes))
        todo, done = set(nodes), set()
        futures: dict[Any, Any] = {}  # node -> its task, kept while a later node needs its in-memory outputs
        running: dict[Any, Any] = {}  # task -> node
        client = connect_dask(self._scheduler)
        try:
            self._logger.info("Running %d node(s) on the Dask cluster at %s (%d worker thread(s))", len(nodes),
                              client.scheduler.address, sum(client.nthreads().values()))
            while todo or running:
                ready = sorted((n for n in todo if dependencies[n] <= done), key=lambda n: n.name)
                ran_here = False
                for node in ready:
                    todo.discard(node)
                    if any(_logs_to_mlflow(catalog.get(name)) for name in node.outputs if name in catalog):
                        self._run_here(node, catalog, hook_manager, run_id, futures, producers)
                        self._finish(node, pipeline, catalog, load_counts, done, len(nodes))
                        ran_here = True
                        continue
                    hook_manager.hook.before_node_run(node=node, catalog=catalog, inputs=self._params(node, catalog),
                                                      is_async=self._is_async, run_id=run_id)
                    upstream = [futures[p] for p in {producers[i] for i in node.inputs if i in producers}
                                if p in futures]
                    task = client.submit(_run_remote, node, catalog, self._is_async, run_id, *upstream,
                                         key=f"{node.name}-{run_id or 'run'}", pure=False)
                    futures[node] = task
                    running[task] = node
                if ran_here:
                    continue  # nodes that waited for those may be ready now
                if not running:
                    if todo:
                        raise RuntimeError(f"Unable to schedule {sorted(n.name for n in todo)}: their inputs are "
                                           "never produced (a cycle, or a node that failed silently).")
                    break
                finished, _ = wait(list(running), return_when="FIRST_COMPLETED")
                for task in finished:
                    node = running.pop(task)
                    try:
                        task.result()
                    except Exception as error:
                        hook_manager.hook.on_node_error(error=error, node=node, catalog=catalog,
                                                        inputs=self._params(node, catalog),
                                                        is_async=self._is_async, run_id=run_id)
                        self._suggest_resume_scenario(pipeline, done, catalog)
                        raise
                    free = [name for name in node.outputs if name in pipeline.outputs() and _is_memory(catalog, name)]
                    if free:  # the run's in-memory results come back to the driver, as Kedro returns them
                        values = task.result()
                        for name in free:
                            replace_dataset(catalog, name, MemoryDataset(values[name], copy_mode="assign"))
                    for name in node.outputs:
                        hook_manager.hook.after_dataset_saved(dataset_name=name, data=None, node=node)
                    hook_manager.hook.after_node_run(node=node, catalog=catalog, inputs=self._params(node, catalog),
                                                     outputs={}, is_async=self._is_async, run_id=run_id)
                    self._finish(node, pipeline, catalog, load_counts, done, len(nodes))
                # A task's in-memory outputs stay on the cluster until every node reading them has run.
                for node in [n for n in futures if all(c in done for c in pipeline.nodes if
                                                       set(n.outputs) & set(c.inputs))]:
                    if node in done:
                        del futures[node]
        finally:
            close_dask(client)

    def _run_here(self, node: Any, catalog: Any, hook_manager: Any, run_id: str | None, futures: dict,
                  producers: dict) -> None:
        """A node in the driver, with every hook, after its in-memory inputs come back from the cluster."""
        for name in node.inputs:
            producer = producers.get(name)
            if producer in futures and _is_memory(catalog, name):
                replace_dataset(catalog, name, MemoryDataset(futures[producer].result()[name], copy_mode="assign"))
        Task(node=node, catalog=catalog, hook_manager=hook_manager, is_async=self._is_async, run_id=run_id).execute()

    def _finish(self, node: Any, pipeline: Pipeline, catalog: Any, load_counts: Counter, done: set,
                total: int) -> None:
        done.add(node)
        self._logger.info("Completed node: %s", node.name)
        self._logger.info("Completed %d out of %d tasks", len(done), total)
        self._release_datasets(node, catalog, load_counts, pipeline)

    @staticmethod
    def _params(node: Any, catalog: Any) -> dict[str, Any]:
        """The node's parameter inputs (small, held in the driver's catalog): what node hooks log."""
        return {name: catalog.load(name) for name in node.inputs if name.startswith("params:") or name == "parameters"}
