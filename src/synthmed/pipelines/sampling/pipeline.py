"""Wiring of the ``sampling`` pipeline: one template, one namespace per registered family."""

from kedro.pipeline import Node, Pipeline, pipeline

from synthmed.core.lazy import lazy_module
from synthmed.generators.names import FAMILY_NAMES

_nodes = lazy_module("synthmed.pipelines.sampling.nodes")


def template() -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.sampling_plan, "params:sampling", "sampling_plan", name="sampling_plan"),
            Node(
                _nodes.sample_generator,
                ["generator", "sampling_plan", "slices", "slice_manifest", "patches", "patch_manifest",
                 "params:run", "params:sampling"],
                ["samples", "sample_provenance", "sample_pngs", "sampled_grid"],
                name="sample_generator",
            ),
            Node(
                _nodes.sample_retained_checkpoints,
                ["generator", "sampling_plan", "slices", "slice_manifest", "patches", "patch_manifest",
                 "params:run", "params:sampling", "params:model", "params:training"],
                ["checkpoint_samples", "checkpoint_provenance"],
                name="sample_retained_checkpoints",
            ),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    shared = {"slices", "slice_manifest", "patches", "patch_manifest"}
    return sum((pipeline(template(), namespace=family, inputs=shared) for family in FAMILY_NAMES), Pipeline([]))
