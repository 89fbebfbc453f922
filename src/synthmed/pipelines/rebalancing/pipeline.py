"""Wiring of the ``rebalancing`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.pipelines.rebalancing.nodes import generate_rebalancing, plan_rebalancing, publish_rebalanced


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(plan_rebalancing, ["slice_manifest", "params:rebalancing"], "rebalancing_plan",
                 name="plan_rebalancing"),
            Node(generate_rebalancing,
                 ["ddpm.generator", "dcgan.generator", "rebalancing_plan", "slice_manifest", "params:rebalancing"],
                 ["rebalancing_samples", "rebalancing_provenance"], name="generate_rebalancing"),
            Node(publish_rebalanced,
                 ["slices", "slice_manifest", "rebalancing_samples", "rebalancing_provenance", "rebalancing_plan",
                  "params:rebalancing"],
                 "rebalanced_dataset", name="publish_rebalanced"),
        ]
    )
