"""Wiring of the ``rebalancing`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.generators.registry import FAMILIES
from synthmed.pipelines.rebalancing.nodes import plan_rebalancing, publish_rebalanced, rebalance


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(plan_rebalancing, ["slice_manifest", "params:rebalancing"], "rebalancing_plan",
                 name="plan_rebalancing"),
            # Every registered family's generator is offered; params:rebalancing.generator picks one.
            # Sampling and the gate alternate in rounds (over-generation), so they are one node.
            Node(rebalance,
                 ["rebalancing_plan", "slices", "slice_manifest", "slices.feature_encoder", "params:rebalancing",
                  "params:evaluation", *(f"{family}.generator" for family in FAMILIES)],
                 ["rebalancing_samples", "rebalancing_gate", "rebalancing_gate_metrics", "rebalancing_self_test",
                  "rebalancing_rounds"], name="rebalance"),
            Node(publish_rebalanced,
                 ["slices", "slice_manifest", "rebalancing_samples", "rebalancing_gate", "params:rebalancing",
                  "build_info"],
                 "rebalanced_dataset", name="publish_rebalanced"),
        ]
    )
