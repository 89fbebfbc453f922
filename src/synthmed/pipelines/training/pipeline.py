"""Wiring of the ``training`` pipeline: one template, one namespace per registered family."""

from kedro.pipeline import Node, Pipeline, pipeline

from synthmed.generators.registry import FAMILIES
from synthmed.pipelines.training.nodes import train_generator

_SHARED = {"slices", "slice_manifest", "patches", "patch_manifest"}


def template() -> Pipeline:
    return Pipeline(
        [
            Node(
                train_generator,
                ["slices", "slice_manifest", "patches", "patch_manifest", "params:family", "params:model",
                 "params:training", "params:run"],
                ["generator", "training_history", "sample_grid", "loss_curve"],
                name="train_generator",
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum((pipeline(template(), namespace=family, inputs=_SHARED) for family in FAMILIES), Pipeline([]))
