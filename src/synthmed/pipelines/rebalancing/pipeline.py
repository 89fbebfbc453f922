"""Wiring of the ``rebalancing`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module
from synthmed.generators.names import FAMILY_NAMES

_nodes = lazy_module("synthmed.pipelines.rebalancing.nodes")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.plan_rebalancing, ["slice_manifest", "params:rebalancing"], "rebalancing_plan",
                 name="plan_rebalancing"),
            # Every registered family's generator is offered; params:rebalancing.generator picks one.
            # Sampling and the gate alternate in rounds (over-generation), so they are one node.
            Node(_nodes.rebalance,
                 ["rebalancing_plan", "slices", "slice_manifest", "slices.feature_encoder", "params:rebalancing",
                  "params:evaluation", *(f"{family}.generator" for family in FAMILY_NAMES)],
                 ["rebalancing_samples", "rebalancing_gate", "rebalancing_gate_metrics", "rebalancing_self_test",
                  "rebalancing_rounds"], name="rebalance"),
            Node(_nodes.publish_rebalanced,
                 ["slices", "slice_manifest", "rebalancing_samples", "rebalancing_gate", "params:rebalancing",
                  "build_info"],
                 "rebalanced_dataset", name="publish_rebalanced"),
        ]
    )
