"""Wiring of the ``feature_encoders`` pipeline: one template, one namespace per source."""

from kedro.pipeline import Node, Pipeline, pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.feature_encoders.nodes")

SOURCES = {"slices": ("slices", "slice_manifest"), "patches": ("patches", "patch_manifest"),
           "lesion_patches": ("lesion_patches", "lesion_patch_manifest")}


def template() -> Pipeline:
    return Pipeline([
        Node(_nodes.train_feature_encoder, ["arrays", "manifest", "params:source", "params:evaluation.encoder"],
             ["feature_encoder", "encoder_facts"], name="train_feature_encoder"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    return sum(
        (pipeline(template(), namespace=source, inputs={"arrays": arrays, "manifest": manifest},
                  parameters={"params:source": f"params:evaluation.sources.{source}",
                              "params:evaluation.encoder": "params:evaluation.encoder"})
         for source, (arrays, manifest) in SOURCES.items()),
        Pipeline([]),
    )
