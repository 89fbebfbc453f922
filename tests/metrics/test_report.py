"""The evaluation report's rounding rule, its flags, the headline file and the page's order."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from synthmed.__main__ import headline as headline_command
from synthmed.metrics.report import (
    FLAG_DEGENERATE,
    FLAG_OUTSIDE,
    FLAG_SMALL_N,
    estimate,
    estimate_flags,
    headline_text,
    interval_decimals,
    render_report,
)
from synthmed.protocols.evaluation import headline_metrics


@pytest.mark.parametrize(("value", "low", "high", "text"), [
    (15.525134, 4.026925, 42.936424, "16 [4, 43]"),  # width 39: units
    (-0.0333333, -0.0707251, 0.0, "-0.033 [-0.071, 0.000]"),  # width 0.07: thousandths
    (0.6666666, 0.5, 0.6666666, "0.67 [0.50, 0.67]"),
    (1552.5, 1200.2, 1590.7, "1550 [1200, 1590]"),  # width 390: tens
    (-0.0004, -0.009, 0.008, "0.000 [-0.009, 0.008]"),  # no "-0.000"
])
def test_a_value_is_printed_to_the_digits_its_interval_supports(value, low, high, text):
    assert estimate(value, low=low, high=high) == text


def test_a_standard_deviation_rounds_like_an_interval_of_one_std_each_side():
    assert interval_decimals(0.7 - 0.047, 0.7 + 0.047) == 3  # width 0.094: two significant digits
    assert estimate(0.6999999, std=0.0471404) == "0.700 ± 0.047"


def test_without_spread_significant_digits_are_kept():
    assert estimate(0.8645833) == "0.865"
    assert estimate(float("nan")) == "n/a" and estimate(None) == "n/a"


def test_a_point_outside_its_interval_is_flagged_in_words():
    # the neighbouring-slice FID floor of a demo run: 0.0117 with a bootstrap interval [0.33, 17.6]
    text = estimate(0.011702, low=0.333378, high=17.632215, n=96)
    assert text.startswith("0 [0, 18]") and f"⚠ {FLAG_OUTSIDE}" in text
    assert estimate_flags(15.5, low=4.0, high=42.9, n=96) == []  # a healthy estimate carries no flag


def test_a_degenerate_estimate_is_flagged_and_not_rounded_away():
    # KID whose subsets were the whole set: std 3e-15 (seen in a demo run)
    text = estimate(5.425679, std=3.375e-15)
    assert text == f"5.43 ± 3.4e-15 ⚠ {FLAG_DEGENERATE}"
    assert FLAG_DEGENERATE in estimate(0.5, low=0.5, high=0.5)  # an interval without width
    assert FLAG_DEGENERATE not in estimate(0.5, std=0.01)


def test_too_few_images_is_flagged():
    assert estimate(20.0, low=10.0, high=30.0, n=3, show_n=True) == f"20 [10, 30] (N = 3) ⚠ {FLAG_SMALL_N}"
    assert FLAG_SMALL_N not in estimate(20.0, low=10.0, high=30.0, n=96)


def _metrics() -> dict[str, float]:
    """A slice of collect_metrics' names for two families and the rebalancing gate."""
    metrics = {}
    for family, fid in (("ddpm", 15.5), ("dcgan", 18.0)):
        metrics |= {f"{family}.fidelity.fid": fid, f"{family}.fidelity.fid_low": 4.0,
                    f"{family}.fidelity.fid_high": 42.9, f"{family}.fidelity.fid_n": 96.0,
                    f"{family}.fidelity.fid_floor_halves": 21.1, f"{family}.fidelity.fid_floor_halves_low": 3.9,
                    f"{family}.fidelity.fid_floor_halves_high": 63.5, f"{family}.fidelity.kid": 5.4,
                    f"{family}.fidelity.kid_std": 3e-15, f"{family}.fidelity.precision": 0.86,
                    f"{family}.fidelity.recall": 0.93, f"{family}.fidelity.coverage": 0.5,
                    f"{family}.memorisation.flagged_fraction": 0.76,
                    f"{family}.utility.real_synthetic.balanced_accuracy_delta": -0.033,
                    f"{family}.utility.real_synthetic.balanced_accuracy_delta_low": -0.071,
                    f"{family}.utility.real_synthetic.balanced_accuracy_delta_high": 0.0,
                    f"{family}.utility.real.balanced_accuracy": 0.7}
    return metrics | {"rebalanced.gate.pixel_threshold": 0.94, "rebalanced.gate.relative_threshold": 0.54,
                      "rebalanced.gate.self_test_recall": 1.0,
                      "rebalanced.gate.flagged_fraction": 0.59, "rebalanced.gate.planted_count": 100.0,
                      "rebalanced.published_synthetic": 90.0, "rebalanced.shortfall.axial": 18.0,
                      "rebalanced.shortfall.sagittal": 0.0, "rebalanced.shortfall_total": 18.0}


HEADLINE_KEYS = {
    "ddpm.fid", "ddpm.fid_low", "ddpm.fid_high", "ddpm.fid_n", "ddpm.fid_floor", "ddpm.fid_floor_low",
    "ddpm.fid_floor_high", "ddpm.kid", "ddpm.kid_std", "ddpm.precision", "ddpm.recall", "ddpm.utility_delta",
    "ddpm.utility_delta_low", "ddpm.utility_delta_high", "ddpm.flagged_fraction",
    "dcgan.fid", "dcgan.fid_floor",
    "gate.pixel_threshold", "gate.relative_threshold", "gate.self_test_recall", "gate.flagged_fraction",
    "published.synthetic", "published.shortfall.axial", "published.shortfall.sagittal",
}


def test_the_headline_holds_the_published_generator_in_full_and_the_gate():
    metrics = _metrics()
    headline = headline_metrics(metrics, "ddpm")
    assert set(headline) == HEADLINE_KEYS
    assert headline["ddpm.fid_floor"] == metrics["ddpm.fidelity.fid_floor_halves"]
    assert headline["published.shortfall.axial"] == 18.0
    assert list(headline)[0] == "ddpm.fid"  # the published generator first
    everything = headline_metrics(metrics, "dcgan", every_family=True)
    assert list(everything)[0] == "dcgan.fid" and "ddpm.utility_delta" in everything
    partial = headline_metrics({k: v for k, v in metrics.items() if "kid" not in k}, "ddpm")
    assert "ddpm.kid" not in partial and "ddpm.fid" in partial  # a missing number is left out


def test_the_printed_headline_folds_intervals_puts_the_generator_first_and_explains_flags():
    headline = dict(sorted(headline_metrics(_metrics(), "ddpm").items()))  # as MetricsDataset writes it
    text = headline_text(headline)
    lines = text.splitlines()
    assert lines[0].split() == ["ddpm.fid", "16", "[4,", "43]", "(N", "=", "96)"]
    assert not any(line.split()[0].endswith(("_low", "_high", "_std", "_n")) for line in lines)
    assert "ddpm.kid" in text and f"⚠ {FLAG_DEGENERATE}:" in text  # the flag and, below, what it means
    assert lines.index(next(x for x in lines if "dcgan.fid " in x)) > lines.index(
        next(x for x in lines if "ddpm.utility_delta" in x))


def test_the_headline_command_prints_the_file_and_names_a_missing_one(tmp_path: Path, capsys):
    path = tmp_path / "headline.json"
    path.write_text(json.dumps(headline_metrics(_metrics(), "ddpm"), sort_keys=True))
    assert headline_command(["--file", str(path)]) == 0
    assert "ddpm.utility_delta" in capsys.readouterr().out
    assert headline_command(["--file", str(tmp_path / "absent.json")]) == 2
    assert "make demo" in capsys.readouterr().err


def _report(headline: dict[str, float]) -> str:
    utility = pd.DataFrame({"mode": ["real"], "score": ["balanced_accuracy"], "mean": [0.7], "std": [0.05],
                            "low": [0.55], "high": [0.73], "delta_vs_real": [float("nan")],
                            "delta_low": [float("nan")], "delta_high": [float("nan")], "n_test": [30],
                            "seeds": [3], "minority_class": ["axial"]})
    family = {"family": "ddpm", "source": "slices", "feature_space": "encoder",
              "fidelity": {"fid": 15.5, "fid_low": 4.0, "fid_high": 42.9, "fid_n": 96.0},
              "utility": utility, "memorisation": {}, "figures": [("nearest pairs", b"\x89PNG-nearest")]}
    return render_report(title="t", comparison=pd.DataFrame({"family": ["ddpm"], "fid": [15.5]}),
                         families=[family], shared_figures=[], gate=None, reader_images=4, level=0.95,
                         grids=[("ddpm (slices): real and synthetic", b"\x89PNG-grid")], headline=headline)


def test_the_report_opens_with_the_grids_then_the_headline_then_the_details():
    report = _report(headline_metrics(_metrics(), "ddpm", every_family=True))
    grid = report.index("iVBORy1ncmlk")  # base64 of the grid's bytes
    order = [report.index('id="images"'), grid, report.index('id="headline"'), report.index("16 [4, 43]"),
             report.index('id="details"'), report.index("iVBORy1uZWFyZXN0")]  # the details' figure
    assert order == sorted(order)
    headline_part = report[report.index('id="headline"'):report.index('id="details"')]
    assert f"⚠ {FLAG_DEGENERATE}" in headline_part  # KID's std of 3e-15, flagged next to the number
    assert "did not vary" in headline_part  # and explained under the table
    assert "0.94" in headline_part and "published.shortfall.axial" in headline_part  # the gate's numbers


def test_the_headline_table_fits_the_page():
    report = _report(headline_metrics(_metrics(), "ddpm", every_family=True))
    headline_part = report[report.index('id="headline"'):report.index('id="details"')]
    first_table = headline_part[headline_part.index("<table"):headline_part.index("</table>")]
    header = first_table[:first_table.index("</thead>")]
    assert header.count("<th>") <= 9  # one row per family, few columns


def test_the_utility_table_names_the_test_patients_and_the_seed_spread():
    from synthmed.metrics.report import utility_table

    summary = pd.DataFrame([{"mode": "real+synthetic", "score": "f1.lesion", "mean": 0.24, "std": 0.17, "seeds": 3,
                             "n_test": 274, "n_test_groups": 4, "low": 0.05, "high": 0.45, "delta_vs_real": 0.07,
                             "delta_low": -0.2, "delta_high": 0.3}])
    row = utility_table(summary).iloc[0]
    assert row["n test"] == "274 images of 4 patients" and row["seeds (std)"] == "3 (0.17)"
    assert row["value"].startswith("0.24") and "0.05" in row["value"] and "0.45" in row["value"]
