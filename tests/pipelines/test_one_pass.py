"""Issue 9 item 11 around the one pass: its candidate layer stays local, and ingestion reports progress."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import yaml

from synthmed.core import progress
from synthmed.core.dvc_outputs import dvc_outputs, pushable_problems
from synthmed.datasets.file_folder import FileFolderDataset
from synthmed.pipelines.ingestion import nodes
from tests.conftest import PROJECT_ROOT, TEST_KEY, png_bytes
from tests.pipelines.test_ingestion_pool import DEID, PARAMS, write_ct_series

CANDIDATES = "data/02_intermediate/deid_candidates"


def test_the_candidate_layer_is_local_and_synthmed_push_refuses_it_otherwise(tmp_path):
    # Copies of items the pixel checks will quarantine (text, faces) are in it: never pushed.
    assert CANDIDATES in {o.path for o in dvc_outputs(PROJECT_ROOT) if not o.push}
    assert pushable_problems(PROJECT_ROOT) == []
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    for out in stages["stages"]["ingestion"]["outs"]:
        if isinstance(out, dict) and CANDIDATES in out:
            out[CANDIDATES] = None  # as if push: false had been dropped
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stages))
    problems = pushable_problems(tmp_path)  # what `synthmed push` checks before pushing anything
    assert [line.split(" ")[0] for line in problems] == [CANDIDATES]
    assert "add `push: false` to it in dvc.yaml" in problems[0]


def test_ingestion_logs_progress_lines_without_a_terminal(tmp_path, monkeypatch, caplog):
    source = tmp_path / "src"
    write_ct_series(source, 2, 3)
    shutil.copy(PROJECT_ROOT / "src/synthmed/pipelines/ingestion/README.md", source / "README.md")  # ignored
    clock = iter(range(0, 10_000, 20))  # every reading of the clock is 20 s after the last
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    raw = FileFolderDataset(path=str(source)).load()
    params = {**PARAMS, "workers": 1}
    inventory = nodes.inventory_sources(raw, params)
    with caplog.at_level(logging.INFO, logger=nodes.logger.name):
        nodes.read_dicom_items(raw, inventory, nodes.read_label_table(raw, params), TEST_KEY, params, DEID)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Reading and de-identifying")]
    # 30 s apart at most, and the last one at the end: files done/total, files/s, elapsed, ETA.
    assert len(lines) >= 3 and lines[-1].startswith("Reading and de-identifying DICOM files: 6/6 files (")
    assert all(" files/s), elapsed " in line and ", ETA " in line for line in lines)
    done = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert done == sorted(done) and len(set(done)) == len(done)


def test_the_readers_log_a_last_progress_line(tmp_path, caplog):
    source = tmp_path / "src"
    (source / "photos").mkdir(parents=True)
    (source / "photos/a.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    raw = FileFolderDataset(path=str(source)).load()
    params = {**PARAMS, "workers": 1}
    inventory = nodes.inventory_sources(raw, params)
    with caplog.at_level(logging.INFO, logger=nodes.logger.name):
        nodes.read_raster_items(raw, inventory, nodes.read_label_table(raw, params), TEST_KEY, params)
    assert any(r.getMessage().startswith("Reading raster files: 1/1 files (") for r in caplog.records)
