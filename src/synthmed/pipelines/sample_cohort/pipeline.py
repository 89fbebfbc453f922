"""Wiring of the ``sample_cohort`` pipeline (the first DVC stage: the demo's raw source folder)."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.sample_cohort.nodes")


def create_pipeline(**kwargs) -> Pipeline:
    # `raw_sources@cohort`: the cohort's fixed folder, transcoded with the `raw_sources@files` that
    # ingestion reads, so a combined run writes the cohort first (synthmed.hooks).
    return Pipeline([Node(_nodes.build_sample_cohort, "params:sample_cohort", "raw_sources@cohort",
                          name="build_sample_cohort")])
