"""Wiring of the ``release`` pipeline: one template, one namespace per generator family."""

from kedro.pipeline import Node, Pipeline, pipeline

from synthmed.core.lazy import lazy_module
from synthmed.generators.names import FAMILY_NAMES

_nodes = lazy_module("synthmed.pipelines.release.nodes")


def template() -> Pipeline:
    return Pipeline([
        Node(_nodes.release_model, ["model_files", "params:family", "evaluation_metrics", "memorisation_table"],
             "released_model", name="release_model"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    return sum(
        (pipeline(template(), namespace=family, inputs={"evaluation_metrics"},
                  parameters={"params:family": f"params:{family}.family"})
         for family in FAMILY_NAMES),
        Pipeline([Node(_nodes.release_dataset, ["rebalanced_dataset", "evaluation_headline"], "released_dataset",
                       name="release_dataset")]),
    )
