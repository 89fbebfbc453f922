"""`make test` runs the suite on two processes (pytest-xdist). The scheduler in tests/conftest.py
sends every test module to one process whole, and the modules that read the session's shared
`dvc repro` to the same process, so that run is made once (it takes minutes)."""

from __future__ import annotations

from types import SimpleNamespace

from tests.conftest import SHARED_RUN_FIXTURE, SHARED_RUN_MODULES, pytest_xdist_make_scheduler, xdist_unit


class _Worker:
    """What xdist's scheduler asks of a worker process: an identity and a channel for work."""

    def __init__(self, name: str, given: dict[int, str]) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.given, self.pending, self.shutting_down = given, [], False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.pending.extend(indices)
        self.given.update({i: self.gateway.id for i in indices})

    def shutdown(self) -> None:
        self.shutting_down = True


def test_a_module_is_one_unit_and_the_shared_run_modules_are_one_together():
    assert {xdist_unit(f"{module}::test_x[p]") for module in SHARED_RUN_MODULES} == {SHARED_RUN_FIXTURE}
    assert xdist_unit("tests/test_cli.py::test_y[a::b]") == "tests/test_cli.py"
    assert xdist_unit("tests/pipelines/test_generation.py::Case::test_z") == "tests/pipelines/test_generation.py"


def test_xdist_gives_each_unit_to_one_process():
    config = SimpleNamespace(getvalue={"dist": "loadscope", "tx": ["2*popen"]}.get,
                             option=SimpleNamespace(loadscopereorder=True))
    scheduler = pytest_xdist_make_scheduler(config, None)
    modules = ("tests/test_a.py", *SHARED_RUN_MODULES, "tests/test_b.py", "tests/test_c.py")
    collection = [f"{module}::test_{i}" for module in modules for i in range(3)]
    given: dict[int, str] = {}
    workers = [_Worker("gw0", given), _Worker("gw1", given)]
    for worker in workers:
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    while any(worker.pending for worker in workers):  # each process finishes its tests and gets more
        for worker in workers:
            while worker.pending:
                scheduler.mark_test_complete(worker, worker.pending.pop(0))
    assert sorted(given) == list(range(len(collection)))  # every test ran
    by_unit: dict[str, set[str]] = {}
    for index, worker in given.items():
        by_unit.setdefault(xdist_unit(collection[index]), set()).add(worker)
    assert all(len(workers_of_unit) == 1 for workers_of_unit in by_unit.values()), by_unit
    assert set(given.values()) == {"gw0", "gw1"}  # and both processes had work
    assert pytest_xdist_make_scheduler(SimpleNamespace(getvalue={"dist": "load"}.get), None) is None
