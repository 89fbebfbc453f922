"""Over-generation: rebalancing samples and gates in rounds until every class meets its target.

A fake generator (constant images, one provenance row each) and a fake gate (flags candidates
by a fixed rule per class) make the rounds fast and deterministic; the real gate and
generator are exercised by tests/pipelines/test_generation.py.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from synthmed.privacy.memorisation import MemorisationError
from synthmed.protocols.rebalancing import (
    ROUND_SEED_STRIDE,
    GateDecision,
    OverGeneration,
    RebalancingConfig,
    RebalancingShortfall,
    publish_rebalanced,
    rebalance_in_rounds,
    rebalancing_config,
)

NAMES = ["a", "b", "c"]


def _plan(**needed: int) -> pd.DataFrame:
    return pd.DataFrame([{"condition": "class", "label": k, "count": v, "case": ""} for k, v in needed.items()],
                        columns=["condition", "label", "count", "case"])


class FakeGenerator:
    """Images filled with their class id; records every round's plan and seed."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, int], int]] = []

    def __call__(self, plan: pd.DataFrame, seed: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        self.calls.append((dict(zip(plan["label"], plan["count"])), seed))
        labels = [label for label, count in zip(plan["label"], plan["count"]) for _ in range(int(count))]
        ids = np.array([NAMES.index(label) for label in labels], dtype=np.int64)
        images = np.repeat(ids.astype(np.float32)[:, None, None, None] / 3, 16, axis=2).repeat(16, axis=3)
        provenance = pd.DataFrame({"index": range(len(labels)), "family": "fake", "checkpoint": "0" * 16,
                                   "sampler": "ddim", "steps": 1, "guidance": 1.0, "seed": seed,
                                   "batch_position": range(len(labels)), "condition": "class", "label": labels,
                                   "case": "", "source_index": -1})
        return {"images": images, "labels": ids}, provenance


def fake_gate(rules: dict[str, object], action: str = "drop"):
    """A gate flagging candidates by ``rules[label](position in the round)``; ``fail`` raises like the real one."""

    def gate(synthetic, provenance):
        flagged = np.array([bool(rules.get(label, lambda i: False)(i))
                            for i, label in enumerate(provenance["label"])], dtype=bool)
        if action == "fail" and flagged.any():
            raise MemorisationError(f"Memorisation gate: {int(flagged.sum())} of {len(flagged)} candidates flagged.")
        table = provenance.reset_index(drop=True).assign(memorisation_flagged=flagged, nn_pixel_similarity=0.5,
                                                         nn_pixel_neighbour_index=-1)
        numbers = {"gate.pixel_threshold": 0.9, "gate.self_test_recall": 1.0, "gate.percentile": 99.9,
                   "gate.held_out_count": 10.0, "gate.planted_count": 4.0, "gate.planted_missed": 0.0,
                   "gate.feature_threshold": float("nan")}
        planted = pd.DataFrame({"source_index": [0, 1], "flagged": [True, True]})
        return GateDecision(~flagged, table, numbers), numbers, planted

    return gate


def _config(**overrides) -> RebalancingConfig:
    return rebalancing_config({"gate_action": "drop", "seed": 7, **overrides})


def test_rounds_replace_dropped_candidates_until_every_target_is_met():
    generator = FakeGenerator()
    # a: every second candidate of a round is a copy (pass rate 1/2); b: every third (2/3).
    gate = fake_gate({"a": lambda i: i % 2 == 0, "b": lambda i: i % 3 == 0})
    result = rebalance_in_rounds(_plan(a=10, b=6), generator, gate, _config().rounds)
    n, keep, table = result.numbers, result.decision.keep, result.decision.provenance
    assert n["published.a"] == 10 and n["published.b"] == 6 and n["shortfall_total"] == 0
    assert n["rounds"] > 1 and n["rounds"] == len(generator.calls)
    # round 1 samples the deficit; later rounds only what is missing, sized by the pass rate
    assert generator.calls[0][0] == {"a": 10, "b": 6}
    assert all(count >= 1 for plan, _ in generator.calls[1:] for count in plan.values())
    assert [seed for _, seed in generator.calls] == [7 + r * ROUND_SEED_STRIDE for r in range(len(generator.calls))]
    # one row per candidate, indices unique over the rounds, and the arrays line up with them
    assert table["index"].tolist() == list(range(len(table))) == list(range(len(result.synthetic["images"])))
    assert table["round"].min() == 1 and table["round"].max() == n["rounds"]
    assert not (keep & table["memorisation_flagged"].to_numpy()).any()  # nothing flagged is published
    assert n["candidates_sampled"] == len(table) and n["gate.candidate_count"] == len(table)
    assert n["dropped.a"] + n["dropped.b"] == n["gate.dropped_count"] == table["memorisation_flagged"].sum()
    assert n["published_synthetic"] == keep.sum() == 16
    assert n["surplus_count"] == (~keep & ~table["memorisation_flagged"]).sum()
    rounds = result.rounds
    assert rounds.groupby("label")["published"].sum().to_dict() == {"a": 10, "b": 6}
    assert rounds.groupby("label")["requested"].sum().to_dict() == {"a": n["sampled.a"], "b": n["sampled.b"]}
    assert result.self_test["flagged"].all()
    # deterministic: the same plan, seed and gate give the same rounds
    again = rebalance_in_rounds(_plan(a=10, b=6), FakeGenerator(), gate, _config().rounds)
    pd.testing.assert_frame_equal(again.rounds, rounds)


def test_limits_stop_the_rounds_and_the_shortfall_is_reported(caplog):
    generator = FakeGenerator()
    gate = fake_gate({"b": lambda i: True})  # the generator only ever copies class b
    with caplog.at_level(logging.WARNING, logger="synthmed.protocols.rebalancing"):
        result = rebalance_in_rounds(_plan(a=3, b=4), generator, gate,
                                     _config(max_rounds=5, max_candidates_factor=2.0).rounds)
    n = result.numbers
    # b asks for its deficit, then for all its budget left (pass rate 0), then has none left: 2 rounds
    assert n["rounds"] == 2 and n["sampled.b"] == 8 and n["dropped.b"] == 8
    assert n["shortfall.b"] == 4 and n["shortfall.a"] == 0 and n["shortfall_total"] == 4
    assert "b short by 4 of 4 synthetic images (8 candidates sampled of at most 8, 8 dropped" in caplog.text
    # the round limit
    result = rebalance_in_rounds(_plan(b=4), FakeGenerator(), gate, _config(max_rounds=1).rounds)
    assert result.numbers["rounds"] == 1 and result.numbers["sampled.b"] == 4 and result.numbers["shortfall.b"] == 4
    # the card says who fell short and by how many
    slices = {"images": np.zeros((4, 1, 16, 16), np.float32)}
    manifest = pd.DataFrame({"index": range(4), "split": "train", "label": ["a", "a", "c", "b"],
                             "class_id": [0, 0, 2, 1]})
    files = publish_rebalanced(slices, manifest, result.synthetic, result.decision, _config(max_rounds=1))
    card = " ".join(files["README.md"].split())
    assert "**Short of target:** 4 synthetic image(s) (`on_shortfall: warn`)" in card
    assert "| b | 4 | 4 | 4 | 0 | 4 |" in card


def test_shortfall_fails_the_run_when_configured():
    gate = fake_gate({"b": lambda i: i % 2 == 0})
    with pytest.raises(RebalancingShortfall, match=r"b short by \d+ of 4 .*on_shortfall: fail.*max_rounds"):
        rebalance_in_rounds(_plan(a=2, b=4), FakeGenerator(), gate, _config(max_rounds=1, on_shortfall="fail").rounds)
    # enough rounds: no shortfall, no failure
    result = rebalance_in_rounds(_plan(a=2, b=4), FakeGenerator(), gate, _config(on_shortfall="fail").rounds)
    assert result.numbers["shortfall_total"] == 0
    # another block's over-generation (a study's, which always fails short) is named, with its file
    study = OverGeneration(max_rounds=1, on_shortfall="fail", where="study_x.multiplication.over_generation",
                           on_shortfall_configurable=False)
    with pytest.raises(RebalancingShortfall) as error:
        rebalance_in_rounds(_plan(a=2, b=4), FakeGenerator(), gate, study)
    assert "Raise study_x.multiplication.over_generation.max_rounds" in str(error.value)
    assert "parameters_study_x.yml" in str(error.value) and "on_shortfall" not in str(error.value)
    # gate_action fail still stops at the first flagged image
    with pytest.raises(MemorisationError, match="flagged"):
        rebalance_in_rounds(_plan(b=4), FakeGenerator(), fake_gate({"b": lambda i: i == 1}, "fail"),
                            _config(gate_action="fail").rounds)


def test_an_empty_plan_still_runs_the_gate_once():
    generator = FakeGenerator()
    result = rebalance_in_rounds(_plan(), generator, fake_gate({}), _config().rounds)
    assert len(generator.calls) == 1 and result.numbers["rounds"] == 1 and result.numbers["shortfall_total"] == 0
    assert len(result.decision.keep) == 0 and result.numbers["gate.self_test_recall"] == 1.0


@pytest.mark.parametrize(("key", "value", "message"), [
    ("on_shortfall", "ignore", "on_shortfall must be one of"),
    ("max_rounds", 0, "max_rounds must be an integer >= 1"),
    ("max_candidates_factor", 0.5, "max_candidates_factor must be a number >= 1"),
    ("pass_rate_margin", 0.9, "pass_rate_margin must be a number >= 1"),
])
def test_limits_are_validated(key, value, message):
    with pytest.raises(ValueError, match=message):
        _config(**{key: value})


# ------------------------------------------------------------------ fraction flagged per checkpoint


def _scored(checkpoints: list[str], flagged: list[bool], steps: list[int] | None = None) -> pd.DataFrame:
    table = pd.DataFrame({"index": range(len(flagged)), "checkpoint": checkpoints, "memorisation_flagged": flagged,
                          "nn_pixel_similarity": 0.5})
    return table.assign(checkpoint_step=steps) if steps is not None else table


def test_fraction_flagged_per_checkpoint_in_table_metrics_and_report():
    from synthmed.metrics.report import render_report
    from synthmed.protocols.evaluation import FamilyResult, checkpoint_table, flagged_by_checkpoint

    # a later checkpoint (step 400) memorises more than an earlier one (step 200): rows sorted by step
    late_first = _scored(["bbbb"] * 4 + ["aaaa"] * 2, [True, True, True, False, False, False], [400] * 4 + [200] * 2)
    table = flagged_by_checkpoint("ddpm", late_first)
    assert table[["checkpoint", "step", "samples", "flagged"]].values.tolist() == [["aaaa", 200, 2, 0],
                                                                                  ["bbbb", 400, 4, 3]]
    assert table["flagged_fraction"].tolist() == [0.0, 0.75]
    # without steps (the final generator only): one row per checkpoint hash
    one = flagged_by_checkpoint("dcgan", _scored(["cccc"] * 3, [False, True, False]))
    assert one[["family", "checkpoint", "samples", "flagged"]].values.tolist() == [["dcgan", "cccc", 3, 1]]
    # the gate could not run: samples counted, flagged and fraction unknown (not 0: nothing was checked)
    from synthmed.protocols.evaluation import scored_provenance

    unscored = scored_provenance(pd.DataFrame({"index": range(2), "checkpoint": "dddd"}), None, np.arange(5))
    assert unscored["memorisation_flagged"].isna().all() and unscored["nn_pixel_similarity"].isna().all()
    assert unscored["memorisation_flagged"].dtype == "boolean"  # nullable, not object
    row = flagged_by_checkpoint("pix2pix", unscored).iloc[0]
    assert row["samples"] == 2 and np.isnan(row["flagged"]) and np.isnan(row["flagged_fraction"])

    results = [FamilyResult(f, "slices", "encoder", {}, {}, pd.DataFrame(), [], pd.DataFrame(), t)
               for f, t in (("ddpm", table), ("dcgan", one))]
    combined = checkpoint_table(results)
    assert combined["family"].tolist() == ["ddpm", "ddpm", "dcgan"]
    html = render_report(title="t", comparison=pd.DataFrame({"a": [1]}), families=[], shared_figures=[], gate=None,
                         reader_images=0, level=0.95, checkpoints=combined)
    section = html[html.index("Fraction flagged per family and checkpoint"):]
    assert "bbbb" in section and "0.75" in section and "aaaa" in section


def test_memorisation_scores_report_each_checkpoint(monkeypatch):
    import torch

    from synthmed.privacy.memorisation import GateConfig
    from synthmed.protocols import evaluation as protocol

    class Report:  # what run_gate returns, for 4 samples of which checkpoint "late" drew the flagged ones
        candidates = pd.DataFrame({"pixel_similarity": [0.2, 0.3, 0.99, 0.98], "pixel_distance": 0.0,
                                   "pixel_transform": "", "feature_similarity": 0.0, "relative_distance": 0.9,
                                   "flagged": [False, False, True, True], "pixel_neighbour": 0,
                                   "feature_neighbour": 0})
        # the second held-out image is a copy across the splits: left out of the calibration
        held_out = pd.DataFrame({"pixel_similarity": [0.5, 0.995], "duplicate": [False, True],
                                 "content_free": False, "low_foreground": False})
        pixel_threshold, self_test_recall = 0.9, 1.0

        def summary(self):
            return {"pixel_threshold": 0.9, "self_test_recall": 1.0}

    monkeypatch.setattr(protocol, "run_gate", lambda *args, **kwargs: Report())
    split = protocol.Split(torch.zeros(4, 1, 8, 8), torch.zeros(4), np.arange(4), torch.zeros(4, 2))
    evaluation = protocol.EvaluationSet(
        "ddpm", "slices", ("a",), lambda images: torch.zeros(len(images), 2), split, split, split, split,
        pd.DataFrame({"index": range(4), "checkpoint": ["early", "early", "late", "late"]}), None, None)
    table, numbers, every = protocol.memorisation_scores(evaluation, GateConfig())
    assert numbers["flagged_fraction.checkpoint_early"] == 0.0 and numbers["flagged_fraction.checkpoint_late"] == 1.0
    assert numbers["flagged_fraction"] == 0.5 and len(table) == len(every) == 4
    assert numbers["held_out_max_pixel_similarity"] == 0.995 and numbers["calibration_max_pixel_similarity"] == 0.5


def test_the_rebalancing_generator_must_have_learnt_slices():
    from synthmed.generators.base import TrainedGenerator
    from synthmed.pipelines.rebalancing.nodes import rebalance

    # conf/base's DCGAN learns lesion patches: it cannot fill the slices' training split.
    on_patches = TrainedGenerator("dcgan", None, None, ("normal", "lesion"), {"source": "lesion_patches"})
    with pytest.raises(ValueError, match=r"generator='dcgan'.*trained on 'lesion_patches' \(dcgan.run.source\)"):
        rebalance(pd.DataFrame(), None, pd.DataFrame(), None, {"generator": "dcgan"}, {}, on_patches)
