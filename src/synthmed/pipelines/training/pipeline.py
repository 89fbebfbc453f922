"""Wiring of the ``training`` pipeline: one template, one namespace per family."""

from kedro.pipeline import Node, Pipeline, pipeline

from synthmed.pipelines.training.nodes import train_generator

FAMILIES = ("ddpm", "pix2pix", "dcgan")
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


def per_family(template_pipeline: Pipeline) -> Pipeline:
    """``template_pipeline`` once per family namespace, sharing the extraction outputs."""
    return sum((pipeline(template_pipeline, namespace=family, inputs=_SHARED) for family in FAMILIES), Pipeline([]))


def create_pipeline(**kwargs) -> Pipeline:
    return per_family(template())
