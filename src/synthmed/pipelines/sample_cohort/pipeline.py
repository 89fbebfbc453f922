"""Wiring of the ``sample_cohort`` pipeline (not part of the default pipeline; run on purpose:
``kedro run --pipelines sample_cohort``)."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.sample_cohort.nodes")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([Node(_nodes.build_sample_cohort, "params:sample_cohort", "sample_cohort_files",
                          name="build_sample_cohort")])
