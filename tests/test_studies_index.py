"""`synthmed studies`: one page with each 2D study's table beside its published figure."""

from __future__ import annotations

import re
from pathlib import Path

from synthmed.__main__ import studies
from synthmed.protocols.studies import STUDIES, PublishedRow, StudyRow, study_table, table_metrics


def _write_table(root: Path, name: str) -> None:
    summary = {"mse": {"mean": 0.0135, "low": 0.0099, "high": 0.0182, "n": 16},
               "psnr": {"mean": 25.5, "low": 24.2, "high": 26.7, "n": 16}}
    floor = {"mse": {"mean": 0.062, "low": 0.05, "high": 0.074, "n": 16},
             "psnr": {"mean": 18.4, "low": 17.6, "high": 19.5, "n": 16}}
    table = study_table([StudyRow("pix2pix (ours)", "ours", summary, "held-out photographs"),
                         StudyRow("mean training image", "floor", floor, "the floor")],
                        [PublishedRow("published (Pix2Pix)", {"mse": 0.0378, "psnr": 21.18}, "Paper 2020, Table 2")],
                        ["mse", "psnr"], level=0.95)
    (root / name).mkdir(parents=True)
    table.to_csv(root / name / "table.csv", index=False)


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_the_index_puts_every_run_study_beside_its_published_figure_and_names_the_others(tmp_path, capsys):
    _write_table(tmp_path, "mask_to_image")
    assert studies(["--root", str(tmp_path)]) == 0
    text = _text((tmp_path / "index.html").read_text())
    # Ours with its interval and N, the floor, and the published constant with its citation.
    assert "pix2pix (ours) ours 16 0.0135 [0.0099, 0.0182] 25.50 [24.20, 26.70]" in text
    assert "mean training image floor 16 0.0620 [0.0500, 0.0740]" in text
    assert "published (Pix2Pix) published - 0.0378 21.18 Paper 2020, Table 2" in text
    for name in STUDIES:
        if name != "mask_to_image":
            assert f"Not run yet: kedro run --pipelines study_{name}" in text
    assert "1 of 4 studies" in capsys.readouterr().out


def test_metric_columns_are_the_table_s_metrics_without_their_bounds(tmp_path):
    import pandas as pd

    _write_table(tmp_path, "inpainting")
    table = pd.read_csv(tmp_path / "inpainting/table.csv")
    assert table_metrics(table) == ["mse", "psnr"]


def test_a_table_that_is_not_a_study_table_is_refused_with_its_path(tmp_path, capsys):
    (tmp_path / "inpainting").mkdir()
    (tmp_path / "inpainting/table.csv").write_text("a,b\n1,2\n")
    assert studies(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "inpainting/table.csv") in err and "not a study table" in err
    assert not (tmp_path / "index.html").exists()


def test_a_run_that_saves_a_study_table_writes_the_page_again(tmp_path, caplog):
    # `kedro run --pipelines study_inpainting` after `make studies`: the page must not keep showing
    # the study as it was (here: not run at all).
    from kedro.io import DataCatalog
    from kedro.pipeline import Node, Pipeline
    from kedro_datasets.pandas import CSVDataset

    from synthmed.hooks import StudiesIndexHook

    _write_table(tmp_path, "mask_to_image")
    assert studies(["--root", str(tmp_path)]) == 0
    _write_table(tmp_path, "inpainting")
    catalog = DataCatalog({"inpainting_table": CSVDataset(filepath=str(tmp_path / "inpainting/table.csv")),
                           "figures_table": CSVDataset(filepath=str(tmp_path / "elsewhere/table.csv"))})
    hook = StudiesIndexHook()

    def run(output: str, failed: bool = False) -> str:
        pipeline = Pipeline([Node(lambda: None, None, [output, "unregistered"], name="study")])
        if failed:
            hook.on_pipeline_error(pipeline=pipeline, catalog=catalog)
        else:
            hook.after_pipeline_run(pipeline=pipeline, catalog=catalog)
        return _text((tmp_path / "index.html").read_text())

    assert "Not run yet: kedro run --pipelines study_inpainting" in run("figures_table")  # not a study's table
    text = run("inpainting_table", failed=True)  # a run that failed after saving the table
    assert "Not run yet: kedro run --pipelines study_inpainting" not in text
    assert text.count("pix2pix (ours) ours 16 0.0135 [0.0099, 0.0182]") == 2  # inpainting and mask_to_image
    # Another study's unreadable table leaves the page as it was, with a warning naming the file,
    # and the run goes on.
    (tmp_path / "lesion_patches").mkdir()
    (tmp_path / "lesion_patches/table.csv").write_text("a,b\n1,2\n")
    assert run("inpainting_table") == text
    assert str(tmp_path / "lesion_patches/table.csv") in caplog.text and "not written again" in caplog.text
