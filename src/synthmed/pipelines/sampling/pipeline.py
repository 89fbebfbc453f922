"""Wiring of the ``sampling`` pipeline: one template, one namespace per registered family."""

from kedro.pipeline import Node, Pipeline, pipeline

from synthmed.core.lazy import lazy_module
from synthmed.generators.names import FAMILY_NAMES

_nodes = lazy_module("synthmed.pipelines.sampling.nodes")

# The extraction outputs (shared across families); params:run.source picks the family's own.
_REAL = ["slices", "slice_manifest", "patches", "patch_manifest", "lesion_patches", "lesion_patch_manifest"]


def template() -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.sampling_plan, "params:sampling", "sampling_plan", name="sampling_plan"),
            Node(
                _nodes.sample_generator,
                ["generator", "sampling_plan", *_REAL, "params:run", "params:sampling"],
                ["samples", "sample_provenance", "sample_pngs", "sampled_grid"],
                name="sample_generator",
            ),
            Node(
                _nodes.sample_retained_checkpoints,
                ["generator", "sampling_plan", *_REAL, "params:run", "params:sampling", "params:model",
                 "params:training"],
                ["checkpoint_samples", "checkpoint_provenance"],
                name="sample_retained_checkpoints",
            ),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum((pipeline(template(), namespace=family, inputs=set(_REAL)) for family in FAMILY_NAMES), Pipeline([]))
