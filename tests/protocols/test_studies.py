"""The study table writer: our rows with intervals and N, floors, and the published figure with its citation."""

from __future__ import annotations

import pytest

from synthmed.protocols.studies import (
    STUDY_COLUMNS,
    PublishedRow,
    StudyRow,
    check_held_out_splits,
    check_level,
    render_study_page,
    render_study_section,
    study_table,
)

METRICS = ("mse", "ssim", "psnr")


def _summary(mean: float, n: int = 8) -> dict[str, float]:
    return {"mean": mean, "low": mean - 0.01, "high": mean + 0.01, "n": float(n)}


def _rows(n_floor: int = 8) -> list[StudyRow]:
    return [StudyRow("pix2pix (ours)", "ours", {m: _summary(0.5) for m in METRICS}, "trained here"),
            StudyRow("mean image", "floor", {m: _summary(0.2, n_floor) for m in METRICS}, "baseline")]


PUBLISHED = [PublishedRow("published", {"mse": 0.0378, "ssim": 0.731, "psnr": 21.18}, "Paper, Table 2")]


def test_table_has_the_published_columns_and_our_rows_first():
    table = study_table(_rows(), PUBLISHED, METRICS, level=0.95)
    assert list(table.columns) == STUDY_COLUMNS + ["mse", "mse_low", "mse_high", "ssim", "ssim_low", "ssim_high",
                                                   "psnr", "psnr_low", "psnr_high"]
    assert list(table["row"]) == ["pix2pix (ours)", "mean image", "published"]
    assert list(table["kind"]) == ["ours", "floor", "published"]
    assert list(table["n"][:2]) == [8, 8] and table["n"].isna().iloc[2]
    published = table.iloc[2]
    assert (published["mse"], published["ssim"], published["psnr"]) == (0.0378, 0.731, 21.18)
    assert published["source"] == "Paper, Table 2" and published[["mse_low", "psnr_high"]].isna().all()
    assert table.loc[0, "ssim_low"] == pytest.approx(0.49)


def test_rows_must_share_n_carry_every_metric_and_published_rows_a_citation():
    with pytest.raises(ValueError, match="must share N"):
        study_table(_rows(n_floor=7), [], METRICS, level=0.95)
    incomplete = [StudyRow("ours", "ours", {"mse": _summary(0.1)})]
    with pytest.raises(ValueError, match=r"lacks metric\(s\) \['ssim', 'psnr'\]"):
        study_table(incomplete, [], METRICS, level=0.95)
    with pytest.raises(ValueError, match="needs a citation"):
        PublishedRow("published", {"mse": 0.1}, " ")
    with pytest.raises(ValueError, match="kind must be one of"):
        StudyRow("x", "published", {})


def test_section_shows_intervals_n_and_the_citation():
    table = study_table(_rows(), PUBLISHED, METRICS, level=0.95)
    section = render_study_section(title="Study <x>", anchor="s", table=table, metrics=METRICS,
                                   metric_labels={"psnr": "PSNR (dB)"}, digits={"mse": 4}, figures=[("grid", "AAAA")],
                                   notes=["a note"])
    assert "0.5000 [0.4900, 0.5100]" in section and "21.180" in section and "Paper, Table 2" in section
    assert "Study &lt;x&gt;" in section and "PSNR (dB)" in section and "95%" in section
    assert "<td>8</td>" in section and 'src="data:image/png;base64,AAAA"' in section
    page = render_study_page(title="t", sections=[section])
    assert page.startswith("<!DOCTYPE html>") and section in page


@pytest.mark.parametrize("splits", [[], ["train"], ["validation", "train"], ["tset"]])
def test_held_out_splits_other_than_validation_and_test_are_refused_by_name(splits):
    with pytest.raises(ValueError, match=r"study_x\.test_splits must be a non-empty list of validation, test"):
        check_held_out_splits("study_x.test_splits", splits)


@pytest.mark.parametrize("splits", [["validation"], ["test"], ("validation", "test")])
def test_validation_and_test_are_held_out_splits(splits):
    check_held_out_splits("study_x.test_splits", splits)


@pytest.mark.parametrize("level", [0.5, 1.0, 95, "0.95", True, float("nan")])
def test_levels_outside_one_half_to_one_are_refused(level):
    with pytest.raises(ValueError, match=r"study_x\.level must be in \(0\.5, 1\)"):
        check_level("study_x.level", level)


def test_a_level_inside_is_accepted():
    check_level("study_x.level", 0.95)
