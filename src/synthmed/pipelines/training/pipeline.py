"""Wiring of the ``training`` pipeline: one template, one namespace per registered family."""

from kedro.pipeline import Node, Pipeline, pipeline

from synthmed.core.lazy import lazy_module
from synthmed.generators.names import FAMILY_NAMES

_nodes = lazy_module("synthmed.pipelines.training.nodes")

_SHARED = {"slices", "slice_manifest", "patches", "patch_manifest", "lesion_patches", "lesion_patch_manifest"}


def template() -> Pipeline:
    return Pipeline(
        [
            Node(
                _nodes.train_generator,
                ["slices", "slice_manifest", "patches", "patch_manifest", "lesion_patches", "lesion_patch_manifest",
                 "params:family", "params:model", "params:training", "params:run"],
                ["generator", "training_history", "sample_grid", "loss_curve"],
                name="train_generator",
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum((pipeline(template(), namespace=family, inputs=_SHARED) for family in FAMILY_NAMES), Pipeline([]))
