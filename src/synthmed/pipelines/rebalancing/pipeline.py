"""Wiring of the ``rebalancing`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.generators.registry import FAMILIES
from synthmed.pipelines.rebalancing.nodes import (
    gate_rebalancing,
    generate_rebalancing,
    plan_rebalancing,
    publish_rebalanced,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(plan_rebalancing, ["slice_manifest", "params:rebalancing"], "rebalancing_plan",
                 name="plan_rebalancing"),
            # Every registered family's generator is offered; params:rebalancing.generator picks one.
            Node(generate_rebalancing,
                 ["rebalancing_plan", "slice_manifest", "params:rebalancing",
                  *(f"{family}.generator" for family in FAMILIES)],
                 ["rebalancing_samples", "rebalancing_provenance"], name="generate_rebalancing"),
            Node(gate_rebalancing,
                 ["rebalancing_samples", "rebalancing_provenance", "slices", "slice_manifest", "slices.feature_encoder",
                  "params:rebalancing", "params:evaluation"],
                 ["rebalancing_gate", "rebalancing_gate_metrics", "rebalancing_self_test"], name="gate_rebalancing"),
            Node(publish_rebalanced,
                 ["slices", "slice_manifest", "rebalancing_samples", "rebalancing_gate", "params:rebalancing",
                  "build_info"],
                 "rebalanced_dataset", name="publish_rebalanced"),
        ]
    )
