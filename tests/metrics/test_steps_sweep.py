"""FID against solver steps: the table, the recommended point, the metrics, the report section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from synthmed.generators.base import TrainedGenerator
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.sampling import SamplingConfig
from synthmed.metrics.features import at_size
from synthmed.metrics.report import render_report
from synthmed.metrics.steps_sweep import SWEEP_COLUMNS, recommend, sweep_metrics
from synthmed.protocols.evaluation import (
    EvaluationSet,
    FidelityConfig,
    Split,
    build_report,
    family_result,
    fid_intervals,
    fid_splits,
)
from synthmed.protocols.steps_sweep import StepsSweepConfig, scaled_plan, steps_sweep
from tests.generators.test_contract import TINY

CLASSES = ("axial", "coronal", "sagittal")


def _points(fid, high, steps, seconds=None):
    n = len(fid)
    return pd.DataFrame({"sampler": ["ddim"] * n, "steps": steps, "fid": fid, "fid_low": [f - 1 for f in fid],
                         "fid_high": high, "seconds_per_image": seconds or [0.1 * s for s in steps]})


def test_the_recommended_point_is_the_fewest_steps_within_the_best_interval():
    table = recommend(_points([9.0, 6.0, 5.0, 5.5], [11.0, 7.0, 6.5, 7.0], [5, 10, 25, 50]), None)
    assert table["best"].tolist() == [False, False, True, False]
    assert table["threshold"].iloc[0] == 6.5  # the best point's upper end
    assert table["within_tolerance"].tolist() == [False, True, True, True]
    assert table["recommended"].tolist() == [False, True, False, False]
    # a number: best FID + tolerance
    table = recommend(_points([9.0, 6.0, 5.0, 5.5], [11.0, 7.0, 6.5, 7.0], [5, 10, 25, 50]), 0.7)
    assert table["threshold"].iloc[0] == pytest.approx(5.7) and table["within_tolerance"].tolist() == [0, 0, 1, 1] \
        and table["recommended"].tolist() == [0, 0, 1, 0]
    # equal steps and FID: the faster point; an interval below its estimate still admits the best
    table = recommend(_points([5.0, 5.2], [4.0, 6.0], [10, 10], seconds=[0.3, 0.1]), None)
    assert table["threshold"].iloc[0] == 5.0 and table["recommended"].tolist() == [True, False]
    table = recommend(_points([5.0, 5.0], [6.0, 6.0], [10, 10], seconds=[0.3, 0.1]), None)
    assert table["recommended"].tolist() == [False, True]
    # equal steps, both within: the lower FID, not the faster (measured time varies between runs)
    table = recommend(_points([5.0, 5.3], [6.0, 6.5], [10, 10], seconds=[0.3, 0.1]), None)
    assert table["within_tolerance"].tolist() == [True, True] and table["recommended"].tolist() == [True, False]


def test_scaled_plan_keeps_the_proportions_and_refuses_rows_needing_real_images():
    plan = pd.DataFrame({"condition": ["class"] * 3, "label": list(CLASSES), "count": [32, 32, 32], "case": ""})
    assert scaled_plan(plan, 24)["count"].tolist() == [8, 8, 8]
    assert scaled_plan(plan, 10)["count"].tolist() == [4, 3, 3]
    with pytest.raises(ValueError, match=r"conditions \['mask'\] need real images"):
        scaled_plan(plan.assign(condition=["class", "mask", "class"]), 10)
    with pytest.raises(ValueError, match="steps must be a non-empty list"):
        StepsSweepConfig(points=({"name": "ddim", "steps": []},))
    with pytest.raises(ValueError, match="name must be one of"):
        StepsSweepConfig(points=({"name": "euler", "steps": [5]},))


class _Projection:
    """A fixed random projection of the pixels: a feature network for the test."""

    name = "projection (6-d)"

    def __init__(self, pixels: int):
        self.weights = torch.randn(pixels, 6, generator=torch.Generator().manual_seed(1))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weights


@pytest.fixture(scope="module")
def tiny():
    config = config_from_params("ddpm", {**TINY["ddpm"], "conditioning": ["class"]})
    generator = TrainedGenerator("ddpm", config, get_family("ddpm").build(config, 0).eval(), CLASSES)
    rng = np.random.default_rng(0)
    network = _Projection(8 * 8)

    def split(n: int) -> Split:
        images = torch.as_tensor(rng.uniform(-1, 1, (n, 1, 8, 8)).astype(np.float32))
        return Split(images, torch.arange(n) % 3, np.arange(n), network(images),
                     np.array([f"patient-{i // 3}" for i in range(n)], dtype=object))

    reference = split(24)
    evaluation = EvaluationSet("ddpm", "slices", CLASSES, network, reference, split(4), split(4), split(6),
                               pd.DataFrame({"index": range(6)}), None, None)
    sampling = SamplingConfig(plan=tuple({"condition": "class", "label": c, "count": 32} for c in CLASSES),
                              sampler={"name": "ddim", "steps": 50, "guidance_scale": 2.0}, seed=4, batch_size="auto")
    return generator, evaluation, sampling


def test_the_sweep_samples_every_point_and_scores_it_as_the_evaluation_does(tiny):
    generator, evaluation, sampling = tiny
    config = StepsSweepConfig(points=({"name": "ddim", "steps": [2, 4]}, {"name": "dpmsolver++", "steps": [2]}),
                              images=6, resamples=5)
    fidelity = FidelityConfig(resamples=50, seed=0)
    table = steps_sweep(generator, evaluation, sampling, config, fidelity)
    assert table.columns.tolist() == SWEEP_COLUMNS
    assert list(zip(table["sampler"], table["steps"])) == [("ddim", 2), ("ddim", 4), ("dpmsolver++", 2)]
    assert (table["images"] == 6).all() and (table["guidance"] == 2.0).all() and (table["seed"] == 4).all()
    assert (table["fid_n"] == 6).all() and table["floor"].nunique() == 1  # same N, one floor
    assert (table["seconds_per_image"] > 0).all() and (table["device"] == "cpu").all()
    assert table["recommended"].sum() == 1 and table["best"].sum() == 1
    best = table.loc[table["best"], "fid"].iloc[0]
    threshold = table.loc[table["best"], "fid_high"].iloc[0]
    assert table["threshold"].eq(max(threshold, best)).all()
    assert table["within_tolerance"].tolist() == (table["fid"] <= max(threshold, best)).tolist()
    chosen = table[table["recommended"]].iloc[0]
    assert chosen["steps"] == table.loc[table["within_tolerance"], "steps"].min()
    # the FID of a point is the evaluation's FID of those samples (same sets, same bootstrap)
    from synthmed.generators.base import SamplerSpec
    from synthmed.generators.sampling import generate_from_plan, plan_table

    samples = generate_from_plan(get_family("ddpm"), generator.config, generator.models,
                                 scaled_plan(plan_table(sampling), 6), CLASSES,
                                 SamplerSpec("ddim", 4, guidance_scale=2.0), seed=4, batch_size="auto", checkpoint="x")
    features = evaluation.network(at_size(samples.images, 8))
    sets = fid_splits(evaluation.reference.features, features, seed=0, splits=FidelityConfig().splits,
                      groups=evaluation.reference.patients)
    expected = fid_intervals(sets, FidelityConfig(resamples=5, seed=0))
    assert expected["fid_splits"] == FidelityConfig().splits > 1  # averaged over splits, as the evaluation does
    assert expected["fid_patients"] > 0  # halves split and resampled by patient, as the evaluation does
    row = table.iloc[1]
    assert (row["fid"], row["fid_low"], row["fid_high"]) == pytest.approx(
        (expected["fid"], expected["fid_low"], expected["fid_high"]))
    assert row["floor"] == pytest.approx(expected["fid_floor_halves"])
    # off, or a family not listed: nothing sampled, an empty table with the columns
    assert steps_sweep(generator, evaluation, sampling, StepsSweepConfig(enabled=False), fidelity).empty
    assert steps_sweep(generator, evaluation, sampling, StepsSweepConfig(families=("dcgan",)), fidelity).empty

    metrics = sweep_metrics(table)
    assert metrics["steps_sweep.ddim_4.fid"] == pytest.approx(row["fid"])
    assert "steps_sweep.dpmsolverpp_2.seconds_per_image" in metrics
    assert metrics["steps_sweep.recommended_steps"] == chosen["steps"]

    # into the family's result, metrics.json and the report
    history = pd.DataFrame({"step": [1, 2], "loss": [0.5, 0.4]})
    result = family_result(evaluation, {"fid": 1.0}, {}, _utility(), [], history, None, table)
    from synthmed.protocols.evaluation import collect_metrics

    assert collect_metrics([result], {})["ddpm.steps_sweep.recommended_steps"] == chosen["steps"]
    report = _report_of(result)
    section = report[report.index('id="steps-sweep-ddpm"'):]
    assert f"{chosen['sampler']}, {int(chosen['steps'])} steps" in section[:2000]
    assert "ddpm_steps_sweep.csv" in section and "FID against solver steps" in section
    assert section[:section.index("</table>")].count("<tr") == 4  # header + one row per point
    assert section.index("</table>") < section.index("data:image/png;base64,")  # then the figure


def _report_of(result) -> str:
    from synthmed.privacy.memorisation import GateConfig

    return build_report(pd.DataFrame({"family": ["ddpm"]}), [result], {}, pd.DataFrame(), level=0.95,
                        gate=GateConfig(), gate_action="fail", generator="ddpm")


def _utility() -> pd.DataFrame:
    return pd.DataFrame(columns=["family", "mode", "score", "mean", "std", "low", "high", "delta_vs_real",
                                 "delta_low", "delta_high", "n_test", "seeds", "minority_class"])


def test_a_family_without_a_sweep_has_no_section():
    family = {"family": "dcgan", "source": "slices", "feature_space": "f", "fidelity": {}, "utility": _utility(),
              "memorisation": {}, "figures": [], "steps_sweep": None}
    report = render_report(title="t", comparison=pd.DataFrame({"family": ["dcgan"]}), families=[family],
                           shared_figures=[], gate=None, reader_images=0, level=0.95)
    assert "steps-sweep" not in report
