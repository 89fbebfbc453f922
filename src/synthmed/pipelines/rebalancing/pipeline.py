"""Wiring of the ``rebalancing`` pipeline."""

from kedro.pipeline import Node, Pipeline

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
            Node(generate_rebalancing,
                 ["ddpm.generator", "dcgan.generator", "rebalancing_plan", "slice_manifest", "params:rebalancing"],
                 ["rebalancing_samples", "rebalancing_provenance"], name="generate_rebalancing"),
            Node(gate_rebalancing,
                 ["rebalancing_samples", "rebalancing_provenance", "slices", "slice_manifest", "slices.feature_encoder",
                  "params:rebalancing", "params:evaluation"],
                 ["rebalancing_gate", "rebalancing_gate_metrics", "rebalancing_self_test"], name="gate_rebalancing"),
            Node(publish_rebalanced,
                 ["slices", "slice_manifest", "rebalancing_samples", "rebalancing_gate", "rebalancing_plan",
                  "params:rebalancing"],
                 "rebalanced_dataset", name="publish_rebalanced"),
        ]
    )
