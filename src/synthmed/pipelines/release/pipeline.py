"""Wiring of the ``release`` pipeline: one template, one namespace per generator family.

A family's release runs after ``collect_metrics``, which reads every family's evaluation and the
rebalancing gate. Its nodes are in ``release.<family>``, not in ``<family>``: a namespace must be a
contiguous part of the graph (Kedro warns that it is "interrupted ... and thus invalid" otherwise,
and deployment plugins that group nodes by namespace would have a cycle between the groups)."""

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
        (pipeline(template(), namespace=f"release.{family}",
                  inputs={"evaluation_metrics": "evaluation_metrics", "model_files": f"{family}.model_files",
                          "memorisation_table": f"{family}.memorisation_table"},
                  outputs={"released_model": f"{family}.released_model"},
                  parameters={"params:family": f"params:{family}.family"})
         for family in FAMILY_NAMES),
        Pipeline([Node(_nodes.release_dataset, ["rebalanced_dataset", "evaluation_headline"], "released_dataset",
                       name="release_dataset")]),
    )
