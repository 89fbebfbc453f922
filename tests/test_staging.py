"""Primary-layer outputs are staged and published only after the run's checks (issue 9, item 5)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset

from synthmed.core.staging import STAGING_DIR, StagingArea, remove_stale_staging, staged_layer
from synthmed.datasets.file_folder import FileFolderDataset
from synthmed.hooks import StagingHook


class CheckFailed(RuntimeError):
    pass


def _write_table(value: int) -> pd.DataFrame:
    return pd.DataFrame({"value": [value]})


def _write_files(value: int) -> dict[str, bytes]:
    return {"a/copy.txt": f"new {value}".encode()}


def _check(table: pd.DataFrame, limit: int) -> None:
    if int(table["value"].iloc[0]) > limit:
        raise CheckFailed(f"value {int(table['value'].iloc[0])} above {limit}")


def _later(table: pd.DataFrame) -> pd.DataFrame:
    raise RuntimeError("a later stage (training, say) failed")


def _project(tmp_path: Path) -> tuple[Path, Path, Path]:
    primary = tmp_path / "data" / "03_primary"
    table = primary / "table.csv"
    folder = primary / "copies"
    primary.mkdir(parents=True)
    _write_table(1).to_csv(table, index=False)
    FileFolderDataset(path=str(folder)).save({"a/copy.txt": b"old"})
    return tmp_path, table, folder


def _run(project: Path, pipeline: Pipeline, value: int, limit: int) -> StagingHook:
    """What a Kedro session does around the runner, with only the staging hook registered."""
    catalog = DataCatalog({
        "value": _memory(value), "limit": _memory(limit),
        "table": CSVDataset(filepath=str(project / "data/03_primary/table.csv"), save_args={"index": False}),
        "copies": FileFolderDataset(path=str(project / "data/03_primary/copies")),
        "later_out": CSVDataset(filepath=str(project / "data/05_model_input/later.csv")),
    })
    hook = StagingHook()
    hook._project_path = project
    manager = _create_hook_manager()
    manager.register(hook)
    hook.before_pipeline_run({}, pipeline, catalog)
    try:
        SequentialRunner().run(pipeline, catalog, manager)
    except Exception as exc:
        hook.on_pipeline_error(exc, {}, pipeline, catalog)
        raise
    hook.after_pipeline_run({}, pipeline, catalog)
    return hook


def _memory(value):
    from kedro.io import MemoryDataset

    return MemoryDataset(value)


def _pipeline(*extra: Node) -> Pipeline:
    return Pipeline([
        Node(_write_table, "value", "table", name="write_table"),
        Node(_write_files, "value", "copies", name="write_copies"),
        Node(_check, ["table", "limit"], None, name="check", tags=["gate"]),
        *extra,
    ])


def test_a_failed_check_leaves_the_primary_layer_as_it_was(tmp_path):
    project, table, folder = _project(tmp_path)
    before = {p: p.read_bytes() for p in (table, folder / "a/copy.txt")}
    with pytest.raises(CheckFailed):
        _run(project, _pipeline(), value=5, limit=3)
    assert {p: p.read_bytes() for p in before} == before
    assert not any((project / STAGING_DIR).glob("*/**/*.csv"))


def test_outputs_are_published_after_the_checks_pass(tmp_path, caplog):
    project, table, folder = _project(tmp_path)
    with caplog.at_level("WARNING", logger="kedro.io.data_catalog"):
        _run(project, _pipeline(), value=2, limit=3)
    # Staging and publishing replace the two entries on purpose: Kedro's warning for that is not logged.
    assert not [r for r in caplog.records if "Replacing dataset" in r.getMessage()]
    assert pd.read_csv(table)["value"].tolist() == [2]
    assert (folder / "a/copy.txt").read_bytes() == b"new 2"
    assert not list((project / STAGING_DIR).iterdir())


def test_a_later_failure_does_not_undo_a_checked_primary_layer(tmp_path):
    project, table, _ = _project(tmp_path)
    with pytest.raises(RuntimeError, match="later stage"):
        _run(project, _pipeline(Node(_later, "table", "later_out", name="later")), value=2, limit=3)
    assert pd.read_csv(table)["value"].tolist() == [2]


def test_the_run_reads_its_own_staged_outputs(tmp_path):
    """The check node sees this run's table (value 5 fails), not the published one (1 passes)."""
    project, table, _ = _project(tmp_path)
    with pytest.raises(CheckFailed, match="value 5"):
        _run(project, _pipeline(), value=5, limit=3)


def test_only_primary_outputs_are_staged(tmp_path):
    assert staged_layer(Path("data/03_primary/x.csv"), tmp_path)
    assert staged_layer(tmp_path / "data/03_primary/deidentified", tmp_path)
    assert not staged_layer(Path("data/02_intermediate/x.csv"), tmp_path)
    assert not staged_layer(Path("data/03_primary_other/x.csv"), tmp_path)


def test_commit_keeps_outputs_the_run_did_not_write(tmp_path):
    final = tmp_path / "data/03_primary/kept.csv"
    final.parent.mkdir(parents=True)
    final.write_text("old")
    area = StagingArea(tmp_path)
    area.stage(final)
    assert area.commit() == []
    assert final.read_text() == "old"


def test_stale_staging_of_a_killed_run_is_removed(tmp_path):
    stale = tmp_path / STAGING_DIR / "deadbeef" / "data/03_primary"
    stale.mkdir(parents=True)
    (stale / "x.csv").write_text("half")
    assert remove_stale_staging(tmp_path) == 1
    assert not (tmp_path / STAGING_DIR / "deadbeef").exists()
